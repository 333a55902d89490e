import Hummingbird

public import Logging
import NIOCore
public import Prometheus
public import ServiceLifecycle
import TocsinCore
import TocsinHTTP
public import TocsinStore

/// A built broker process: the HTTP/WebSocket application plus the broker service.
public struct BrokerApplication: Sendable {
    public let broker: Broker
    /// Runs everything until graceful shutdown (SIGINT/SIGTERM when run by `runService`).
    public let service: any Service
    /// Every HTTP route with what it requires, as registered (`"GET /v1/streams/:name (read:{name})"`).
    public let routes: [String]

    init(broker: Broker, service: any Service, routes: [RouteRule]) {
        self.broker = broker
        self.service = service
        self.routes = routes.map(\.description)
    }
}

/// Builds the broker on `store` (opened by the caller: `StoreConfiguration.open`), with its HTTP
/// API and WebSocket endpoint. `onListening` receives the bound port (useful with port 0). The
/// executable and the tests both call this. With `seedExample`, an empty store gets the example
/// definitions first.
///
/// `metrics`, when given, is served in the Prometheus text format at `GET /metrics`; the caller
/// bootstraps swift-metrics with a factory writing to it (the executable does).
public func buildBroker(
    configuration: BrokerConfiguration, store: any Store, logger: Logger, metrics: PrometheusCollectorRegistry? = nil,
    onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> BrokerApplication {
    if configuration.seedExample {
        try await ExampleData.seed(store)
    }
    let eventLoops = EventLoopGroupProvider.singleton.eventLoopGroup
    let broker = try await Broker(configuration: configuration, store: store, logger: logger, eventLoops: eventLoops)
    let routers = BrokerRouters(broker: broker, metrics: metrics, logger: logger)
    let endpoint = WebSocketEndpoint(broker: broker)
    let app = Application(
        router: routers.http,
        server: .guarded(limits: configuration.http, tls: configuration.tls) { responder in
            BrokerChildChannel(
                responder: responder, endpoint: endpoint, http1: .init(httpDecoderConfiguration: configuration.http.decoderConfiguration),
                maxFrameSize: configuration.maxMessageBytes * 4)
        },
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "tocsin"),
        services: broker.services,
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.port
            broker.address.set(port)
            await onListening(port)
        },
        eventLoopGroupProvider: .shared(eventLoops),
        logger: logger
    )
    var services: [any Service] = [app]
    if let settings = configuration.cluster, let controller = broker.controller {
        // The member shuts down first (services stop in reverse order): it drains while the server
        // still serves the clients it is moving away.
        let member = ClusterMember(broker: broker, controller: controller, settings: settings, logger: logger)
        services.append(member)
    }
    return BrokerApplication(
        broker: broker, service: boundedShutdown(services, grace: configuration.shutdownGrace, logger: logger), routes: routers.rules)
}
