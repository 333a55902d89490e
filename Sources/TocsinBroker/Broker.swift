public import Logging
public import ServiceLifecycle
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
    private let dispatchers = Mutex<[String: StreamDispatcher]>([:])
    private let newTails: AsyncStream<StreamDispatcher>
    private let newTailsContinuation: AsyncStream<StreamDispatcher>.Continuation

    public init(configuration: BrokerConfiguration, store: any Store, logger: Logger) async throws {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        (newTails, newTailsContinuation) = AsyncStream.makeStream(of: StreamDispatcher.self)
        try await reloadCatalog()
    }

    /// Reads streams and channels from the store into the catalog.
    public func reloadCatalog() async throws {
        let streams = try await store.streams()
        let channels = try await store.channels()
        try catalog.load(streams: streams, channels: channels)
    }

    // MARK: Service

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.runAckFlusher() }
                group.addTask { await self.runRepetitiveTicker() }
                group.addTask { await self.runRetention() }
                if let interval = self.configuration.storePollInterval, let sqlite = self.store as? SQLiteStore {
                    group.addTask { await self.runStorePoller(sqlite, interval: interval) }
                }
                // Ends when the task is cancelled (graceful shutdown).
                for await dispatcher in self.newTails {
                    group.addTask { await dispatcher.runTail(nowMillis: TimeFormat.nowMillis) }
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
            logger.error("could not persist acknowledged positions; will retry", metadata: ["error": "\(error)"])
            acks.restore(batch)
        }
    }

    private func runRepetitiveTicker() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(10))
            let now = TimeFormat.nowMillis()
            for d in dispatchers.withLock({ Array($0.values) }) {
                await d.flushRepetitive(nowMillis: now)
            }
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

    private func runStorePoller(_ store: SQLiteStore, interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            do { try store.refreshChanges() } catch { logger.warning("store poll failed", metadata: ["error": "\(error)"]) }
        }
    }

    /// How many sessions this broker disconnected as slow consumers.
    public var slowConsumerDisconnectCount: Int { slowConsumerDisconnects.load(ordering: .relaxed) }

    /// The dispatcher of a stream, created (and its tail started) on first use.
    func dispatcher(for info: StreamInfo) -> StreamDispatcher {
        let (dispatcher, created) = dispatchers.withLock { d -> (StreamDispatcher, Bool) in
            if let existing = d[info.name] { return (existing, false) }
            let new = StreamDispatcher(info: info, store: store, catalog: catalog, metrics: metrics, logger: logger)
            d[info.name] = new
            return (new, true)
        }
        if created { newTailsContinuation.yield(dispatcher) }
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
    } catch let error as TocsinError {
        throw error
    } catch {
        throw TocsinError(.internalError, "store failure while \(what): \(error)")
    }
}
