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

    func register(on router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in Response.json(#"{"status":"ok"}"#) }
        router.get("/readyz") { _, _ in Response.json(#"{"status":"ready"}"#) }

        router.post("/v1/brokers") { request, _ in
            await api {
                let body = try await request.jsonBody(limit: Self.maxBodyBytes)
                let reply = try controller.register(try RegistrationRequest(json: body))
                return .json(reply.json, status: .created)
            }
        }
        router.post("/v1/brokers/:id/heartbeat") { request, context in
            await api {
                let id = context.parameters.get("id") ?? ""
                let body = try await request.jsonBody(limit: Self.maxBodyBytes)
                let (incarnation, load) = try Self.heartbeat(body)
                return .json(try controller.heartbeat(id: id, incarnation: incarnation, load: load).json)
            }
        }
        router.post("/v1/brokers/:id/drain") { request, context in
            await api {
                let id = context.parameters.get("id") ?? ""
                let body = try await request.jsonBody(limit: Self.maxBodyBytes)
                guard let incarnation = body["incarnation"]?.stringValue else {
                    throw TocsinError(.badRequest, "drain: 'incarnation' must be a string")
                }
                return .json(try controller.drain(id: id, incarnation: incarnation).json)
            }
        }
        router.delete("/v1/brokers/:id") { request, context in
            await api {
                let id = context.parameters.get("id") ?? ""
                guard let incarnation = request.uri.queryParameters.get("incarnation") else {
                    throw TocsinError(.badRequest, "query parameter 'incarnation' is required")
                }
                try controller.deregister(id: id, incarnation: incarnation)
                return .json(JSONValue.object(["deregistered": .string(id)]))
            }
        }
        router.get("/v1/cluster") { _, _ in
            Response.json(controller.cluster.json)
        }
        router.get("/v1/assign") { request, _ in
            await api {
                .json(try controller.assign(try Self.assignment(request)).json)
            }
        }
        router.refuseMethods(on: "/v1/assign", except: [.get])
    }

    private func api(_ body: () async throws -> Response) async -> Response {
        await respond(logger: controller.logger, body)
    }

    static func heartbeat(_ body: JSONValue) throws(TocsinError) -> (String, BrokerLoad) {
        guard case .object(let o) = body else { throw TocsinError(.badRequest, "heartbeat must be a JSON object") }
        guard let incarnation = o["incarnation"]?.stringValue else {
            throw TocsinError(.badRequest, "heartbeat: 'incarnation' must be a string")
        }
        return (incarnation, try o["load"].map { v throws(TocsinError) in try BrokerLoad(json: v) } ?? .zero)
    }

    static func assignment(_ request: Request) throws(TocsinError) -> AssignmentRequest {
        try request.assignmentRequest()
    }
}

/// A built controller process: the HTTP API plus the lease/rebalance loop.
public struct ControllerApplication: Sendable {
    public let controller: Controller
    public let service: any Service
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
    ControllerAPI(controller: controller).register(on: router)
    if let metrics { router.addMetricsRoute(metrics) }
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
    return ControllerApplication(controller: controller, service: app)
}
