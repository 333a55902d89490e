import Logging
import Synchronization
import TocsinCore

/// The broker's open WebSocket sessions: who is connected, the load they make, and moving them
/// to other brokers. The decisions are `State`'s (pure, tested without sockets); this owner
/// keeps the `Session` objects beside it under one lock and sends `migrate` orders or closes
/// sessions after releasing it.
final class SessionRegistry: Sendable {
    private struct Locked {
        var state = State()
        var sessions: [String: Session] = [:]
    }

    /// What the controller is told in each heartbeat.
    struct Load: Sendable, Equatable {
        /// Sessions staying here (those told to migrate are not counted).
        var connections: Int
        /// Their subscriptions.
        var subscriptions: Int
        /// Sessions told to migrate that have not left yet.
        var migrating: Int
    }

    private let locked = Mutex(Locked())
    private let logger: Logger
    private let metrics: BrokerMetrics
    /// Elapsed time since an origin; injected so tests can drive migration timeouts.
    private let now: @Sendable () -> Duration

    /// Records a `migrate` span per client told to move, when the broker traces.
    private let tracing: BrokerTracing?

    init(logger: Logger, metrics: BrokerMetrics, tracing: BrokerTracing? = nil, now: (@Sendable () -> Duration)? = nil) {
        self.logger = logger
        self.metrics = metrics
        self.tracing = tracing
        if let now {
            self.now = now
        } else {
            let origin = ContinuousClock.now
            self.now = { ContinuousClock.now - origin }
        }
    }

    func opened(_ session: Session) {
        locked.withLock { l in
            l.sessions[session.id] = session
            l.state.open(session.id)
        }
    }

    /// The session said hello: it can be migrated from now on.
    func identified(_ session: Session) {
        locked.withLock { $0.state.identify(session.id) }
    }

    func closed(_ session: Session) {
        locked.withLock { l in
            l.sessions.removeValue(forKey: session.id)
            l.state.close(session.id)
        }
    }

    var count: Int { locked.withLock { $0.state.count } }
    /// Sessions that said hello (the ones a drain can migrate; a bare publisher connection cannot move).
    var identifiedCount: Int { locked.withLock { $0.state.identifiedCount } }

    /// Load as reported to the controller.
    func load() -> Load {
        let (staying, migrating) = locked.withLock { l in
            (l.state.staying.compactMap { l.sessions[$0] }, l.state.migratingCount)
        }
        var subscriptions = 0
        for session in staying { subscriptions += session.subscriptionCount }
        return Load(connections: staying.count, subscriptions: subscriptions, migrating: migrating)
    }

    /// Sends `migrate` to up to `count` identified sessions not already moving; returns how
    /// many took the order.
    @discardableResult
    func migrate(count: Int, to target: BrokerSummary, reason: String) -> Int {
        let at = now()
        let chosen = locked.withLock { l in l.state.startMigration(count: count, now: at).compactMap { l.sessions[$0] } }
        var told = 0
        for session in chosen where session.send(.migrate(to: target.webSocketURL, broker: target.id, reason: reason)) {
            told += 1
            tracing?.migrated(client: session.client, to: target.id, reason: reason)
        }
        if told > 0 {
            metrics.migrationsOrdered.increment(by: Int64(told))
            logger.info("migrating clients", metadata: ["to": "\(target.id)", "clients": "\(told)", "reason": "\(reason)"])
        }
        return told
    }

    /// Closes sessions told to migrate more than `timeout` ago (clients that ignore `migrate`):
    /// they reconnect through `assign` like after any lost connection.
    func closeStaleMigrations(olderThan timeout: Duration) {
        let at = now()
        let stale = locked.withLock { l in l.state.evictStaleMigrations(olderThan: timeout, now: at).compactMap { l.sessions[$0] } }
        for session in stale { session.close(.migrationTimedOut) }
        if !stale.isEmpty {
            logger.warning("closed clients that did not migrate", metadata: ["clients": "\(stale.count)"])
        }
    }
}
