import Logging
import ServiceLifecycle
import Synchronization
import TocsinCore
import TocsinStore

/// Runs `work` every `interval` until graceful shutdown, then `final` once (the ack flusher's
/// last flush). The broker's periodic chores are each one of these, in the service group.
struct PeriodicService: Service, CustomStringConvertible {
    /// How the service group's logs name it.
    let name: String
    let interval: Duration
    let work: @Sendable () async -> Void
    var final: (@Sendable () async -> Void)? = nil
    /// Does the work once at start too, instead of first waiting an interval.
    var atStart = false

    var description: String { name }

    func run() async {
        await cancelWhenGracefulShutdown {
            if atStart { await work() }
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                await work()
            }
        }
        await final?()
    }
}

/// A loop that runs until its task is cancelled, as a service that stops at graceful shutdown.
struct ScopedService: Service {
    let body: @Sendable () async -> Void

    init(_ body: @escaping @Sendable () async -> Void) {
        self.body = body
    }

    func run() async {
        await cancelWhenGracefulShutdown { await body() }
    }
}

/// Waits for graceful shutdown, then runs `action` (also when cancelled instead).
struct OnShutdown: Service {
    let action: @Sendable () async -> Void

    init(_ action: @escaping @Sendable () async -> Void) {
        self.action = action
    }

    func run() async {
        try? await gracefulShutdown()
        await action()
    }
}

/// Persists acknowledged positions in one transaction per interval (`AckTracker` collects them).
final class AckFlusher: Sendable {
    let acks: AckTracker
    let store: any Store
    let logger: Logger
    private let failureLog = Mutex(LogThrottle())

    init(acks: AckTracker, store: any Store, logger: Logger) {
        self.acks = acks
        self.store = store
        self.logger = logger
    }

    func flush() async {
        let batch = acks.take()
        guard !batch.isEmpty else { return }
        do {
            try await store.saveAcks(batch)
        } catch {
            // Retried every flush until it works: logged once a minute, not each time.
            if let failures = failureLog.withLock({ $0.occurred() }) {
                logger.error("could not persist acknowledged positions; will retry", metadata: ["error": "\(error)", "failures": "\(failures)"])
            }
            acks.restore(batch)
        }
    }
}

extension PeriodicService {
    /// Deletes events outside their stream's retention.
    static func retention(store: any Store, every interval: Duration, logger: Logger, nowMillis: @escaping @Sendable () -> Int64) -> PeriodicService {
        PeriodicService(name: "retention", interval: interval) {
            do {
                let deleted = try await store.enforceRetention(nowMillis: nowMillis())
                if deleted > 0 { logger.info("retention deleted events", metadata: ["count": "\(deleted)"]) }
            } catch {
                logger.error("retention failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Sends repetitive subscriptions' batches when due, checking every 10 ms while any is attached.
/// With none it sleeps until one is (`attached()`), so an idle broker is not woken 100 times a
/// second for nothing.
final class RepetitiveTicker: Service, Sendable {
    private let tails: StreamTails
    private let nowMillis: @Sendable () -> Int64
    private let wake = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))

    init(tails: StreamTails, nowMillis: @escaping @Sendable () -> Int64) {
        self.tails = tails
        self.nowMillis = nowMillis
    }

    /// A repetitive subscription was just attached: the ticker must run.
    func attached() {
        wake.continuation.yield()
    }

    func run() async {
        await cancelWhenGracefulShutdown {
            var attached = self.wake.stream.makeAsyncIterator()
            while !Task.isCancelled {
                let now = self.nowMillis()
                var any = false
                for d in self.tails.all where d.flushRepetitive(nowMillis: now) {
                    any = true
                }
                if any {
                    try? await Task.sleep(for: .milliseconds(10))
                } else if await attached.next() == nil {
                    return  // cancelled
                }
            }
        }
    }
}
