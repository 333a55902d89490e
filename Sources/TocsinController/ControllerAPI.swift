import Foundation
import HTTPTypes
import Hummingbird
public import Logging
public import Prometheus
public import ServiceLifecycle
import TocsinCore
import TocsinHTTP
public import TocsinStore

/// The controller's HTTP API (docs/protocol.md, "Cluster API").
struct ControllerAPI: Sendable {
    let controller: Controller
    /// Registration and heartbeat bodies are small; anything bigger is a mistake.
    static let maxBodyBytes = 64 << 10

    /// Registers every route with what it requires: the broker API needs the cluster
    /// credential (a token with the `cluster` scope), discovery the `discovery` scope.
    func register(on routes: GuardedRoutes<BasicRequestContext>) {
        routes.open(.get, "/healthz") { _, _ in Response.json(#"{"status":"ok"}"#) }
        routes.open(.get, "/readyz") { _, _ in Response.json(#"{"status":"ready"}"#) }

        routes.on(.post, "/v1/brokers", .cluster) { request, _, _ in
            let body = try await request.jsonBody(limit: Self.maxBodyBytes)
            let reply = try controller.register(try RegistrationRequest(json: body))
            return try await proven(.json(controller.leaseText(reply), status: .created))
        }
        routes.on(.post, "/v1/brokers/:id/heartbeat", .cluster) { request, context, _ in
            let id = context.parameters.get("id") ?? ""
            let body = try await request.jsonBody(limit: Self.maxBodyBytes)
            let (incarnation, report) = try HeartbeatReport.parse(body)
            return try await proven(.json(controller.leaseText(try controller.heartbeat(id: id, incarnation: incarnation, report: report))))
        }
        routes.on(.post, "/v1/brokers/:id/drain", .cluster) { request, context, _ in
            let id = context.parameters.get("id") ?? ""
            let body = try await request.jsonBody(limit: Self.maxBodyBytes)
            guard let incarnation = body["incarnation"]?.stringValue else {
                throw TocsinError(.badRequest, "drain: 'incarnation' must be a string")
            }
            return try await proven(.json(try controller.drain(id: id, incarnation: incarnation).json))
        }
        routes.on(.delete, "/v1/brokers/:id", .cluster) { request, context, _ in
            let id = context.parameters.get("id") ?? ""
            guard let incarnation = request.uri.queryParameters.get("incarnation") else {
                throw TocsinError(.badRequest, "query parameter 'incarnation' is required")
            }
            try controller.deregister(id: id, incarnation: incarnation)
            return .json(JSONValue.object(["deregistered": .string(id)]))
        }
        routes.on(.get, "/v1/cluster", .discovery) { _, _, _ in
            Response.json(controller.cluster.json)
        }
        routes.on(.get, "/v1/assign", .discovery) { request, _, _ in
            .json(try controller.assign(try Self.assignment(request)).json)
        }
        routes.router.refuseMethods(on: "/v1/assign", except: [.get])
        OperationsAPI(controller: controller).register(on: routes)
        DashboardAPI(controller: controller).register(on: routes)
        routes.addOpenAPIRoute()
    }

    /// An answer to a broker, with the controller's cluster credential when it has one.
    private func proven(_ response: Response) async throws -> Response {
        guard let credential = controller.configuration.credential else { return response }
        var response = response
        response.headers[HTTPField.Name("Tocsin-Cluster-Credential")!] = try await credential()
        return response
    }

    static func assignment(_ request: Request) throws(TocsinError) -> AssignmentRequest {
        try request.assignmentRequest()
    }
}

/// A built controller process: the HTTP API plus the lease/rebalance loop.
public struct ControllerApplication: Sendable {
    public let controller: Controller
    public let service: any Service
    /// Every HTTP route with what it requires, as registered.
    public let routes: [String]
}

/// Builds the controller with its HTTP API. `onListening` receives the bound port.
/// `metrics`, when given, is served in the Prometheus text format at `GET /metrics`; the caller
/// bootstraps swift-metrics with a factory writing to it (the executable does).
public func buildController(
    configuration: ControllerConfiguration, logger: Logger, now: (@Sendable () -> ClusterTime)? = nil,
    metrics: PrometheusCollectorRegistry? = nil, ledger: (any ControllerLedger)? = nil,
    onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) -> ControllerApplication {
    let controller = Controller(configuration: configuration, logger: logger, now: now, ledger: ledger)
    let router = Router(context: BasicRequestContext.self)
    let access = HTTPAccess(
        authentication: configuration.authentication, allowedOrigins: OriginList(configuration.allowedOrigins),
        nowMillis: { Int64(Date().timeIntervalSince1970 * 1000) })
    let routes = GuardedRoutes(router: router, access: access, logger: logger)
    routes.addCORS(methods: [.get])
    ControllerAPI(controller: controller).register(on: routes)
    if let metrics { routes.addMetricsRoute(metrics) }
    let limits = configuration.http
    let app = Application(
        router: router,
        server: .guardedHTTP1(limits: limits, tls: configuration.tls),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "tocsin-controller"),
        services: [controller],
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.port
            controller.advertisedURL.withLock { url in
                if url == nil { url = "\(configuration.tls == nil ? "http" : "https")://\(configuration.host):\(port)" }
            }
            await onListening(port)
        },
        logger: logger
    )
    return ControllerApplication(controller: controller, service: app, routes: routes.rules.map(\.description))
}
