import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TocsinCore
import TocsinHTTP

/// The dashboard (`/ui`), the demo page (`/demo`) and the browser client (`/tocsin.js`), served
/// from the binary with no token (they hold no data: the pages ask for one), and the data the
/// dashboard draws (`GET /v1/dashboard`, `GET /v1/dashboard/events`; scope `admin`).
struct DashboardAPI: Sendable {
    let controller: Controller
    /// How often the event stream sends a snapshot.
    static let interval: Duration = .seconds(1)

    func register(on routes: GuardedRoutes<BasicRequestContext>) {
        let assets: [(String, [UInt8], String)] = [
            ("/ui", PackageResources.dashboard_html, "text/html; charset=utf-8"),
            ("/ui/dashboard.js", PackageResources.dashboard_js, "text/javascript; charset=utf-8"),
            ("/ui/dashboard.css", PackageResources.dashboard_css, "text/css; charset=utf-8"),
            ("/demo", PackageResources.demo_html, "text/html; charset=utf-8"),
            ("/demo.js", PackageResources.demo_js, "text/javascript; charset=utf-8"),
            ("/tocsin.js", PackageResources.tocsin_js, "text/javascript; charset=utf-8"),
        ]
        for (path, bytes, type) in assets {
            routes.open(.get, path) { _, _ in Self.asset(bytes, type: type) }
        }
        routes.on(.get, "/v1/dashboard", .admin) { _, _, _ in
            .json(await controller.dashboard())
        }
        routes.on(.get, "/v1/dashboard/events", .admin) { _, _, _ in
            guard controller.dashboardStreams.add(1, ordering: .relaxed).newValue <= Controller.maxDashboardStreams else {
                controller.dashboardStreams.subtract(1, ordering: .relaxed)
                throw TocsinError(.unavailable, "\(Controller.maxDashboardStreams) dashboards are open already; close one")
            }
            let body = ResponseBody { writer in
                defer { controller.dashboardStreams.subtract(1, ordering: .relaxed) }
                // Ends when the client goes (the write fails) or the controller stops.
                while !controller.stopping.load(ordering: .relaxed), !Task.isCancelled {
                    let snapshot = await controller.dashboard()
                    try await writer.write(ByteBuffer(string: "event: snapshot\ndata: \(snapshot.serialized)\n\n"))
                    try await Task.sleep(for: Self.interval)
                }
                try await writer.finish(nil)
            }
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: body)
        }
    }

    static func asset(_ bytes: [UInt8], type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        // Scripts and styles only from here; the pages talk to this controller and to the brokers (other origins).
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'self'; connect-src 'self' http: https: ws: wss:; img-src 'self' data:; frame-ancestors 'none'"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
