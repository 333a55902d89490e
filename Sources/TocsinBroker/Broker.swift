public import Logging
public import NIOCore
public import ServiceLifecycle
import Foundation
import Synchronization
import TocsinCore
public import TocsinStore

/// The broker: accepts publishes, keeps a stream dispatcher per stream its clients need, and
/// serves sessions. Transport-neutral: the HTTP and WebSocket layers call these operations.
/// As a `Service` it runs the stream tails, the ack flusher, the repetitive-channel ticker and
/// retention until graceful shutdown, then persists the last acknowledged positions.
public final class Broker: Service, Sendable {
    public let configuration: BrokerConfiguration
    public let store: any Store
    let catalog = Catalog()
    let acks = AckTracker()
    let logger: Logger
    let metrics = BrokerMetrics()
    let slowConsumerDisconnects = Atomic<Int>(0)
    /// The bytes of pipelined publishes the broker holds while they commit, across connections.
    let publishBudget: PublishBudget
    private let dispatchers = Mutex<[String: StreamDispatcher]>([:])
    /// Open WebSocket sessions by id.
    let sessions = Mutex<[String: Session]>([:])
    /// The port the server listens on, once it does.
    let listeningPort = Mutex<Int?>(nil)
    /// Set when the broker is a member of a cluster (`tocsin broker --controller`).
    let member = Mutex<ClusterMember?>(nil)
    private let newTails: AsyncStream<StreamDispatcher>
    private let newTailsContinuation: AsyncStream<StreamDispatcher>.Continuation
    /// Told when a subscription of a repetitive channel is attached: wakes the ticker, which
    /// sleeps while there are none.
    private let repetitiveAttached = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))

    /// Unique to this process: a restarted broker is a new incarnation.
    public let incarnation = UUID().uuidString.lowercased()
    private let ackFailureLog = Mutex(LogThrottle())

    /// Watches the server's event loops (`buildBroker` passes them); nil for a broker built without.
    public let eventLoopWatch: EventLoopWatch?

    public init(configuration: BrokerConfiguration, store: any Store, logger: Logger, eventLoops: (any EventLoopGroup)? = nil) async throws {
        self.configuration = configuration
        self.eventLoopWatch = eventLoops.map {
            EventLoopWatch(
                group: $0, interval: configuration.eventLoopWatchInterval, threshold: configuration.eventLoopStallThreshold, logger: logger)
        }
        self.publishBudget = PublishBudget(capacity: configuration.maxPipelinedPublishBytesTotal)
        self.store = store
        self.logger = logger
        (newTails, newTailsContinuation) = AsyncStream.makeStream(of: StreamDispatcher.self)
        try await reloadCatalog()
    }

    /// Reads streams and channels from the store into the catalog. A stored definition that
    /// cannot be read or no longer compiles is logged once and left out; the rest serves.
    public func reloadCatalog() async throws {
        let streams = try await store.streams()
        let channels = try await store.channels()
        for (definition, error) in catalog.load(streams: streams, channels: channels) {
            logger.error(
                "a stored channel no longer compiles against its stream; it is skipped (redefine or delete it), everything else serves",
                metadata: ["channel": "\(definition.name)", "stream": "\(definition.stream)", "error": "\(error.message)"])
        }
    }

    // MARK: Service

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.runAckFlusher() }
                group.addTask { await self.runRepetitiveTicker() }
                group.addTask { await self.runRetention() }
                if let watch = self.eventLoopWatch {
                    group.addTask { await watch.run() }
                }
                // Listening before the store's maintenance (which tells of changes) starts.
                let definitionChanges = self.store.changes.definitionChanges()
                group.addTask { await self.reloadCatalog(on: definitionChanges) }
                for service in self.store.maintenanceServices() {
                    group.addTask { await self.runStoreMaintenance(service) }
                }
                group.addTask { await self.runStoreGauges() }
                // Ends when the task is cancelled (graceful shutdown).
                for await dispatcher in self.newTails {
                    group.addTask { await dispatcher.runTail() }
                }
            }
        }
        await flushAcks()
        logger.info("broker stopped")
    }

    private func runAckFlusher() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.ackFlushInterval)
            await flushAcks()
        }
    }

    func flushAcks() async {
        let batch = acks.take()
        guard !batch.isEmpty else { return }
        do {
            try await store.saveAcks(batch)
        } catch {
            // Retried every flush (200 ms) until it works: logged once a minute, not each time.
            if let failures = ackFailureLog.withLock({ $0.occurred() }) {
                logger.error("could not persist acknowledged positions; will retry", metadata: ["error": "\(error)", "failures": "\(failures)"])
            }
            acks.restore(batch)
        }
    }

    /// Sends repetitive subscriptions' batches when due, checking every 10 ms while any is
    /// attached. With none it sleeps until one is, so an idle broker is not woken 100 times a
    /// second for nothing.
    private func runRepetitiveTicker() async {
        var attached = repetitiveAttached.stream.makeAsyncIterator()
        while !Task.isCancelled {
            let now = TimeFormat.nowMillis()
            var any = false
            for d in dispatchers.withLock({ Array($0.values) }) where d.flushRepetitive(nowMillis: now) {
                any = true
            }
            if any {
                try? await Task.sleep(for: .milliseconds(10))
            } else if await attached.next() == nil {
                return  // cancelled
            }
        }
    }

    /// The ticker must run: a repetitive subscription was just attached.
    func repetitiveSubscriptionAttached() {
        repetitiveAttached.continuation.yield()
    }

    /// How full the store is, for `tocsin_store_used_bytes` and `tocsin_store_max_bytes`.
    private func runStoreGauges() async {
        while !Task.isCancelled {
            if let usage = try? await store.usage() {
                metrics.storeUsedBytes.record(usage.usedBytes)
                metrics.storeMaxBytes.record(usage.maxBytes ?? 0)
            }
            try? await Task.sleep(for: configuration.storeGaugeInterval)
        }
    }

    private func runRetention() async {
        while !Task.isCancelled {
            do {
                let deleted = try await store.enforceRetention(nowMillis: TimeFormat.nowMillis())
                if deleted > 0 { logger.info("retention deleted events", metadata: ["count": "\(deleted)"]) }
            } catch {
                logger.error("retention failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: configuration.retentionInterval)
        }
    }

    /// Reloads the catalog each time the store says definitions changed (another process
    /// sharing it defined, recreated or deleted a stream or channel), until cancelled.
    private func reloadCatalog(on changes: AsyncStream<Void>) async {
        for await _ in changes {
            do {
                try await reloadCatalog()
                logger.info("definitions changed in the shared store; catalog reloaded")
            } catch {
                logger.warning("could not reload the catalog", metadata: ["error": "\(error)"])
            }
        }
    }

    /// One of the store's maintenance services, until the broker stops.
    private func runStoreMaintenance(_ service: any Service) async {
        do {
            try await service.run()
        } catch {
            logger.error("store maintenance failed", metadata: ["service": "\(service)", "error": "\(error)"])
        }
    }

    // MARK: Sessions and load

    /// Sessions that said hello (the ones a drain can migrate; a bare publisher connection cannot move).
    var identifiedSessionCount: Int { sessions.withLock { $0.values.filter { $0.client != nil }.count } }

    func opened(_ session: Session) {
        sessions.withLock { $0[session.id] = session }
    }

    /// Load as reported to the controller. Sessions already told to migrate are not counted:
    /// they are leaving, and counting them would make the controller order the same move twice.
    func currentLoad() -> (connections: Int, subscriptions: Int, migrating: Int) {
        sessions.withLock { all in
            var connections = 0
            var subscriptions = 0
            var migrating = 0
            for session in all.values {
                if session.isMigrating {
                    migrating += 1
                } else {
                    connections += 1
                    subscriptions += session.subscriptionCount
                }
            }
            return (connections, subscriptions, migrating)
        }
    }

    /// Closes sessions told to migrate more than `timeout` ago (clients that ignore `migrate`):
    /// they reconnect through `assign` like after any lost connection.
    func closeStaleMigrations(olderThan timeout: Duration) {
        let deadline = ContinuousClock.now - timeout
        let stale = sessions.withLock { all in all.values.filter { $0.migrating(before: deadline) } }
        for session in stale { session.close(.migrationTimedOut) }
        if !stale.isEmpty {
            logger.warning("closed clients that did not migrate", metadata: ["clients": "\(stale.count)"])
        }
    }

    /// Sends `migrate` to up to `count` identified sessions; returns how many were told.
    @discardableResult
    func migrate(count: Int, to target: BrokerSummary, reason: String) -> Int {
        let candidates = sessions.withLock { all in all.values.filter(\.canMigrate).prefix(count) }
        var told = 0
        for session in candidates where session.migrate(to: target.webSocketURL, broker: target.id, reason: reason) {
            told += 1
        }
        if told > 0 {
            metrics.migrationsOrdered.increment(by: Int64(told))
            logger.info("migrating clients", metadata: ["to": "\(target.id)", "clients": "\(told)", "reason": "\(reason)"])
        }
        return told
    }

    /// The discovery list this broker serves: the controller's, or just itself when standalone.
    public var clusterView: ClusterView {
        if let member = member.withLock({ $0 }) {
            // Not registered yet: point clients at the controller rather than at ourselves.
            return member.view ?? ClusterView(controller: member.controller, brokers: [])
        }
        return ClusterView(controller: nil, brokers: [standaloneSummary])
    }

    /// This broker as a one-node cluster (no controller).
    var standaloneSummary: BrokerSummary {
        let port = listeningPort.withLock { $0 } ?? configuration.port
        let http = configuration.cluster?.advertisedURL ?? "http://\(configuration.host):\(port)"
        let (connections, subscriptions, _) = currentLoad()
        return BrokerSummary(
            id: configuration.brokerID, incarnation: incarnation, webSocketURL: ClusterSettings.webSocketURL(forHTTP: http), httpURL: http,
            region: configuration.cluster?.region ?? "local", location: configuration.cluster?.location,
            capacity: configuration.cluster?.capacity ?? Int(Int32.max), state: .active,
            load: BrokerLoad(connections: connections, subscriptions: subscriptions))
    }

    /// How many sessions this broker disconnected as slow consumers.
    public var slowConsumerDisconnectCount: Int { slowConsumerDisconnects.load(ordering: .relaxed) }

    /// The dispatcher of a stream, created on first use: it then consumes the stream's
    /// commits in this process, and its tail starts.
    func dispatcher(for info: StreamInfo) -> StreamDispatcher {
        let (dispatcher, created) = dispatchers.withLock { d -> (StreamDispatcher, Bool) in
            if let existing = d[info.name] { return (existing, false) }
            let new = StreamDispatcher(info: info, store: store, catalog: catalog, metrics: metrics, logger: logger)
            d[info.name] = new
            return (new, true)
        }
        if created {
            // Weak: the dispatcher holds the store, which holds this closure. One consumer per
            // stream and store: a second broker on the same store in this process (tests) takes
            // it over, and the first one's tail then dispatches for it.
            store.changes.consume(stream: info.name) { [weak dispatcher] epoch, events in
                dispatcher?.dispatchCommitted(epoch: epoch, events: events)
            }
            newTailsContinuation.yield(dispatcher)
        }
        return dispatcher
    }

    func existingDispatcher(_ stream: String) -> StreamDispatcher? {
        dispatchers.withLock { $0[stream] }
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
