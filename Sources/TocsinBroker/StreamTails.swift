import Logging
import ServiceLifecycle
import Synchronization
import TocsinStore

/// One `StreamDispatcher` per stream this broker's clients need, created on first use, and the
/// service that runs their tails. A new dispatcher consumes the stream's commits in this process
/// from then on, and its tail starts at once.
final class StreamTails: Service, Sendable {
    private let store: any Store
    private let catalog: Catalog
    private let metrics: BrokerMetrics
    private let logger: Logger
    private let nowMillis: @Sendable () -> Int64
    private let enricher: Enricher?
    private let tracing: BrokerTracing?
    private let dispatchers = Mutex<[String: StreamDispatcher]>([:])
    private let newTails = AsyncStream.makeStream(of: StreamDispatcher.self)

    init(
        store: any Store, catalog: Catalog, metrics: BrokerMetrics, logger: Logger, nowMillis: @escaping @Sendable () -> Int64,
        enricher: Enricher? = nil, tracing: BrokerTracing? = nil
    ) {
        self.nowMillis = nowMillis
        self.enricher = enricher
        self.tracing = tracing
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.logger = logger
    }

    /// The dispatcher of a stream, created on first use.
    func dispatcher(for info: StreamInfo) -> StreamDispatcher {
        let (dispatcher, created) = dispatchers.withLock { d -> (StreamDispatcher, Bool) in
            if let existing = d[info.name] { return (existing, false) }
            let new = StreamDispatcher(
                info: info, store: store, catalog: catalog, metrics: metrics, logger: logger, nowMillis: nowMillis, enricher: enricher,
                tracing: tracing)
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
            newTails.continuation.yield(dispatcher)
        }
        return dispatcher
    }

    /// The stream's dispatcher if one was created.
    func existing(_ stream: String) -> StreamDispatcher? {
        dispatchers.withLock { $0[stream] }
    }

    var all: [StreamDispatcher] { dispatchers.withLock { Array($0.values) } }

    /// Runs every dispatcher's tail until graceful shutdown.
    func run() async {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                // Ends when the task is cancelled.
                for await dispatcher in self.newTails.stream {
                    group.addTask { await dispatcher.runTail() }
                }
            }
        }
    }
}
