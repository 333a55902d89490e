import Hummingbird
public import Logging
public import NIOCore
import Prometheus
import TocsinHTTP

/// The broker's routes: the HTTP API and the WebSocket endpoint (and `/metrics` when given a
/// registry). `buildBroker` serves them; `BrokerHTTPResponder` answers them without a server.
struct BrokerRouters {
    let http: Router<TocsinRequestContext>
    /// Every HTTP route with what it requires, as registered.
    let rules: [RouteRule]

    init(broker: Broker, metrics: PrometheusCollectorRegistry? = nil, logger: Logger) {
        http = Router(context: TocsinRequestContext.self)
        let routes = GuardedRoutes(router: http, access: broker.access, logger: logger)
        routes.addCORS(methods: [.get, .put, .post, .delete])
        HTTPAPI(broker: broker).register(on: routes)
        WebSocketEndpoint(broker: broker).register(on: routes)
        if let metrics { routes.addMetricsRoute(metrics) }
        rules = routes.rules
    }
}

/// The broker's HTTP routes answered in process, without sockets: routing, body decoding and the
/// API's errors exactly as a served broker answers them, without the connection edge's limits
/// (`HTTPConnectionGuard`). The HTTP fuzz target (Fuzz/Sources/FuzzHTTP) drives it.
public struct BrokerHTTPResponder: Sendable {
    private let responder: RouterResponder<TocsinRequestContext>

    public init(broker: Broker) {
        responder = BrokerRouters(broker: broker, logger: broker.logger).http.buildResponder()
    }

    /// Answers `request` as if it came on `channel` (a `NIOAsyncTestingChannel` will do).
    public func respond(to request: Request, channel: any Channel, logger: Logger) async throws -> Response {
        let context = TocsinRequestContext(source: .init(channel: channel, logger: logger))
        return try await responder.respond(to: request, context: context)
    }
}
