public import Logging
public import NIOCore
public import ServiceLifecycle
import Foundation
import Synchronization
import TocsinCore
import TocsinHTTP
import TocsinHTTPClient
public import TocsinStore

/// The broker: a façade over the parts that each do one job. The transports call its
/// operations through three of them — `subscriptions` (hello, subscribe, unsubscribe, ack),
/// `publishing` (publish, fetch) and `definitions` (streams and channels) — which return domain
/// values; `WebSocketEndpoint` and `HTTPAPI` alone turn them into frames and JSON.
///
/// - `sessions`: the open WebSocket sessions, their load and migration (`SessionRegistry`);
/// - `tails`: one `StreamDispatcher` per stream clients need, and their tails (`StreamTails`);
/// - `catalog`: the compiled streams and channels; `acks`: acknowledged positions to persist;
/// - `services`: every long-running loop, each a `Service` run beside the HTTP server.
public final class Broker: Sendable {
    public let configuration: BrokerConfiguration
    public let store: any Store
    let catalog = Catalog()
    let acks = AckTracker()
    let logger: Logger
    let metrics = BrokerMetrics()
    /// The live settings over the startup values: the settings file's, then the controller's.
    let liveLayers = LiveLayers()
    let slowConsumerDisconnects = Atomic<Int>(0)
    /// The bytes of pipelined publishes the broker holds while they commit, across connections.
    let publishBudget: PublishBudget
    let sessions: SessionRegistry
    /// Every open WebSocket, closed (1001) at shutdown.
    let openWebSockets = OpenWebSockets()
    /// The keepalive clock of its WebSockets, one per event loop.
    let keepalives: KeepaliveSweeps<WebSocketConnection>
    let tails: StreamTails
    /// The datasets channels enrich from, in memory and kept current.
    let datasetTables: DatasetTables
    /// Subscriptions whose parameters follow their client's dataset records.
    let boundSubscriptions: BoundSubscriptions
    let repetitiveTicker: RepetitiveTicker
    /// The port the server listens on, set once it does.
    let address = ListeningAddress()
    /// The controller's discovery list as the cluster member last heard it (nil when standalone).
    let discovery: Discovery?
    /// The controller's API, when this broker is a member of a network: the member registers
    /// and renews through it, and `GET /v1/assign` is forwarded with it. Closed last, at shutdown.
    let controller: ControllerClient?
    /// Wall-clock milliseconds, for time-relative channel conditions and retention.
    let nowMillis: @Sendable () -> Int64
    /// Who may call what: tokens, origins (`configuration.authentication`, `allowedOrigins`).
    let access: HTTPAccess
    /// Per-client rate limits and connection caps.
    let limits: Limits
    let subscriptions: Subscriptions
    let publishing: Publishing
    let definitions: Definitions

    /// When this process started (ms since the epoch), for the registry.
    let startedAtMillis = WallClock.nowMillis()

    /// Unique to this process: a restarted broker is a new incarnation.
    public let incarnation = UUID().uuidString.lowercased()

    /// Watches the server's event loops (`buildBroker` passes them); nil for a broker built without.
    public let eventLoopWatch: EventLoopWatch?

    public init(
        configuration: BrokerConfiguration, store: any Store, logger: Logger, eventLoops: (any EventLoopGroup)? = nil,
        nowMillis: @escaping @Sendable () -> Int64 = WallClock.nowMillis
    ) async throws {
        self.configuration = configuration
        self.eventLoopWatch = eventLoops.map {
            EventLoopWatch(
                group: $0, interval: configuration.eventLoopWatchInterval, threshold: configuration.eventLoopStallThreshold, logger: logger)
        }
        // At least a millisecond: the sweep steps period / 30.
        self.keepalives = KeepaliveSweeps(period: max(configuration.keepalivePeriod, .milliseconds(30)))
        self.publishBudget = PublishBudget(capacity: configuration.maxPipelinedPublishBytesTotal)
        self.store = store
        self.logger = logger
        self.nowMillis = nowMillis
        self.access = HTTPAccess(
            authentication: configuration.authentication, allowedOrigins: OriginList(configuration.allowedOrigins), nowMillis: nowMillis)
        self.limits = Limits(configuration.limits, nowMillis: nowMillis)
        let tracing = configuration.tracer.map {
            BrokerTracing(tracer: $0, broker: configuration.brokerID, deliverySpansPerEvent: max(1, configuration.deliverySpansPerEvent))
        }
        self.sessions = SessionRegistry(logger: logger, metrics: metrics, tracing: tracing)
        self.datasetTables = DatasetTables(store: store, catalog: catalog, logger: logger)
        let enricher = Enricher(tables: datasetTables)
        let boundSubscriptions = BoundSubscriptions(tables: datasetTables)
        self.boundSubscriptions = boundSubscriptions
        datasetTables.onChanges { [weak boundSubscriptions] dataset, keys in boundSubscriptions?.changed(dataset: dataset, keys: keys) }
        self.tails = StreamTails(
            store: store, catalog: catalog, metrics: metrics, logger: logger, nowMillis: nowMillis, enricher: enricher, tracing: tracing)
        self.repetitiveTicker = RepetitiveTicker(tails: tails, nowMillis: nowMillis)
        self.subscriptions = Subscriptions(
            configuration: configuration, store: store, catalog: catalog, tails: tails, sessions: sessions, acks: acks,
            repetitiveTicker: repetitiveTicker, datasetTables: datasetTables, bound: boundSubscriptions, logger: logger,
            nowMillis: nowMillis)
        self.publishing = Publishing(
            configuration: configuration, store: store, catalog: catalog, metrics: metrics, nowMillis: nowMillis, enricher: enricher,
            bound: boundSubscriptions,
            results: ResultCache(maxEntries: configuration.fetchCacheEntries, maxBytes: configuration.fetchCacheBytes), tracing: tracing)
        self.definitions = Definitions(store: store, catalog: catalog, tails: tails)
        self.discovery = configuration.cluster.map { _ in Discovery() }
        self.controller = configuration.cluster.map { cluster in
            var client = ControllerClient(urls: cluster.controllerURLs, trust: cluster.controllerTrust)
            client.token = cluster.credential
            // With the cluster credential, the controller must prove it holds one too.
            if cluster.credential != nil { client.controllerVerifier = configuration.authentication.verifier }
            return client
        }
        try await reloadCatalog()
    }

    /// The broker's long-running work, each a `Service`, in start order: the service group stops
    /// them in reverse, so the ack flusher's final flush comes after everything else stopped.
    public var services: [any Service] {
        let flusher = AckFlusher(acks: acks, store: store, logger: logger)
        let logger = self.logger
        var services: [any Service] = [
            // First, so it stops last: its final flush persists every ack taken before the end.
            PeriodicService(name: "ack flusher", interval: configuration.ackFlushInterval, work: flusher.flush) {
                await flusher.flush()
                logger.info("broker stopped")
            },
            PeriodicService.retention(store: store, every: configuration.retentionInterval, logger: logger, nowMillis: nowMillis),
            datasetTables,
            tails,
            repetitiveTicker,
        ]
        if let controller {
            // First of all, so it stops after everything that calls the controller.
            services.insert(OnShutdown { try? await controller.shutdown() }, at: 0)
        }
        if let eventLoopWatch { services.append(eventLoopWatch) }
        // Listening before the store's maintenance (which tells of other processes' changes) starts.
        let definitionChanges = store.changes.definitionChanges()
        services.append(ScopedService { await self.reloadCatalog(on: definitionChanges) })
        for maintenance in store.maintenanceServices() {
            services.append(
                ScopedService {
                    do {
                        try await maintenance.run()
                    } catch {
                        logger.error("store maintenance failed", metadata: ["service": "\(maintenance)", "error": "\(error)"])
                    }
                })
        }
        let (store, metrics) = (self.store, self.metrics)
        var gauges = PeriodicService(name: "store gauges", interval: configuration.storeGaugeInterval) {
            // How full the store is, for `tocsin_store_used_bytes` and `tocsin_store_max_bytes`.
            if let usage = try? await store.usage() {
                metrics.storeUsedBytes.record(usage.usedBytes)
                metrics.storeMaxBytes.record(usage.maxBytes ?? 0)
            }
        }
        gauges.atStart = true
        services.append(gauges)
        if configuration.memoryTrimInterval > .zero {
            services.append(PeriodicService(name: "memory trim", interval: configuration.memoryTrimInterval) { MemoryTrim.run(logger: logger) })
        }
        // Last, so it stops first, right after the HTTP server: WebSockets hold no task the
        // server would wait for, so they are closed here, each within the close grace.
        let (openWebSockets, closeGrace) = (self.openWebSockets, configuration.closeGrace)
        services.append(OnShutdown { await openWebSockets.closeAll(grace: closeGrace) })
        return services
    }

    /// Reads streams and channels from the store into the catalog. A stored definition that
    /// cannot be read or no longer compiles is logged once and left out; the rest serves.
    /// A definition this broker changes while the store is read makes the read stale: it is
    /// read again (a definition must never vanish from a broker that has just stored it).
    public func reloadCatalog() async throws {
        var skipped: [(definition: ChannelDefinition, error: TocsinError)]?
        while skipped == nil {
            let generation = catalog.generation
            let streams = try await store.streams()
            let channels = try await store.channels()
            let datasets = try await store.datasets()
            skipped = catalog.load(streams: streams, channels: channels, datasets: datasets.map(\.definition), unchangedSince: generation)
        }
        for (definition, error) in skipped ?? [] {
            logger.error(
                "a stored channel no longer compiles against its stream; it is skipped (redefine or delete it), everything else serves",
                metadata: ["channel": "\(definition.name)", "stream": "\(definition.stream)", "error": "\(error.message)"])
        }
    }

    /// Reloads the catalog each time the store says definitions changed (another process
    /// sharing it defined, recreated or deleted a stream or channel), until cancelled. A reload
    /// the store cannot serve is retried until it can: the change is not seen twice.
    private func reloadCatalog(on changes: AsyncStream<Void>) async {
        for await _ in changes {
            var retry = StoreRetry("the catalog reload")
            while !Task.isCancelled {
                do {
                    try await reloadCatalog()
                    retry.succeeded(logger: logger)
                    logger.info("definitions changed in the shared store; catalog reloaded")
                    break
                } catch {
                    await retry.failed(error, logger: logger)
                }
            }
        }
    }

    /// Validates every event (nothing is stored if one is invalid), then appends them as one
    /// batch; see `Publishing.publish`.
    /// `traceparent`: the publisher's W3C trace context, when it traces the publish.
    public func publish(stream name: String, events: [JSONValue], key: String? = nil, traceparent: String? = nil) async throws(TocsinError) -> Appended {
        try await publishing.publish(stream: name, events: events, key: key, traceparent: traceparent, transport: "http")
    }

    /// Load as reported to the controller.
    public func currentLoad() -> (connections: Int, subscriptions: Int, migrating: Int) {
        let load = sessions.load()
        return (load.connections, load.subscriptions, load.migrating)
    }

    /// The discovery list this broker serves: the controller's, or just itself when standalone.
    public var clusterView: ClusterView {
        if let discovery {
            // Not registered yet: point clients at the controller rather than at ourselves.
            return discovery.view ?? ClusterView(controller: controller?.url, brokers: [])
        }
        return ClusterView(controller: nil, brokers: [standaloneSummary])
    }

    /// The HTTP URL this broker is reached at: the advertised one, or its host and bound port.
    var httpURL: String {
        configuration.cluster?.advertisedURL ?? "\(configuration.scheme)://\(configuration.host):\(address.current ?? configuration.port)"
    }

    /// This broker as a one-node cluster (no controller).
    var standaloneSummary: BrokerSummary {
        let http = httpURL
        let load = sessions.load()
        return BrokerSummary(
            id: configuration.brokerID, incarnation: incarnation, webSocketURL: BaseURL.webSocketURL(forHTTP: http), httpURL: http,
            region: configuration.cluster?.region ?? "local", location: configuration.cluster?.location,
            capacity: configuration.cluster?.capacity ?? Int(Int32.max), state: .active,
            load: BrokerLoad(connections: load.connections, subscriptions: load.subscriptions))
    }

    /// How many sessions this broker disconnected as slow consumers.
    public var slowConsumerDisconnectCount: Int { slowConsumerDisconnects.load(ordering: .relaxed) }
}

/// The controller's discovery list as of the cluster member's last heartbeat: the member writes
/// it, the broker serves it at `GET /v1/cluster`.
final class Discovery: Sendable {
    private let latest = Mutex<ClusterView?>(nil)

    var view: ClusterView? { latest.withLock { $0 } }

    func update(_ view: ClusterView) {
        latest.withLock { $0 = view }
    }
}

extension Store {
    /// The stream as stored now, or `unknown_stream`.
    func requireStream(_ name: String) async throws(TocsinError) -> StreamInfo {
        guard let info = try await storeCall("reading the stream", { try await stream(named: name) }) else {
            throw TocsinError(.unknownStream, "no stream named '\(name)'")
        }
        return info
    }
}

/// Runs a store call, turning unexpected failures into `internal` errors.
func storeCall<T>(_ what: String, _ body: () async throws -> T) async throws(TocsinError) -> T {
    do {
        return try await body()
    } catch {
        throw storeError(what, error)
    }
}

/// A store's error as the broker reports it: its own errors as they are, anything else internal.
func storeError(_ what: String, _ error: any Error) -> TocsinError {
    (error as? TocsinError) ?? TocsinError(.internalError, "store failure while \(what): \(error)")
}
