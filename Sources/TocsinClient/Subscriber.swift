public import Logging
import Synchronization
public import TocsinCore

/// A notification as the application sees it: duplicates already dropped.
public struct Notification: Sendable, Hashable {
    public var subscription: String
    public var channel: String
    /// The seq of the (last) event this notification covers.
    public var seq: Int64
    /// Push delivery: the events (one for continuous channels, the period's events for repetitive ones).
    /// Notify delivery: empty; fetch them with `Connection.fetch`.
    public var events: [EventPayload]
    /// How many events matched (equals `events.count` for push delivery).
    public var count: Int
}

/// What a subscriber wants: a channel with parameters, starting from a position the first time.
public struct SubscriptionRequest: Sendable, Hashable {
    public var channel: String
    public var params: [String: JSONValue]
    public var from: StartPosition

    public init(channel: String, params: [String: JSONValue] = [:], from: StartPosition = .latest) {
        self.channel = channel
        self.params = params
        self.from = from
    }
}

/// A durable subscriber that survives broker restarts, failover and migration.
///
/// It finds a broker (a fixed URL, or through the network's discovery list and the controller's
/// `assign`), says hello (the broker resumes its durable subscriptions from their acknowledged
/// positions), subscribes to what it wants, yields notifications in order, acknowledges them and
/// drops duplicates by seq.
///
/// - On `migrate {to}` it connects to `to`, resumes everything there, and only then closes the old
///   connection (make-before-break); notifications from both are merged through the same
///   duplicate filter, so nothing is lost or repeated.
/// - On a lost connection it reconnects after a random delay (full jitter: uniform in
///   [0, min(maxBackoff, initialBackoff·2^attempt)]), so the clients of a dead broker come back
///   spread out rather than in one herd, asks for a broker excluding the one that failed, and resumes.
public struct Subscriber: Sendable {
    public struct Configuration: Sendable {
        /// Where to connect: a fixed broker, or a network found through seed URLs.
        public enum Endpoint: Sendable {
            /// A broker's WebSocket URL (`ws://host:port/v1/ws`).
            case broker(String)
            /// HTTP URLs of any nodes of the network; the broker is chosen by `assign`.
            case cluster(BrokerLocator.Configuration)
        }

        public var endpoint: Endpoint
        public var client: String
        public var initialBackoff: Duration = .milliseconds(100)
        public var maxBackoff: Duration = .seconds(10)
        /// How often acknowledged positions are sent (acks are cumulative).
        public var ackInterval: Duration = .milliseconds(100)
        /// Send acks early after this many notifications.
        public var ackEvery = 64
        /// Connecting, `hello` and every `subscribe` must finish within this, or the attempt
        /// counts as failed (a broker that accepts connections but does not answer).
        public var setupTimeout: Duration = .seconds(10)

        public init(url: String, client: String) {
            self.endpoint = .broker(url)
            self.client = client
        }

        public init(seeds: [String], client: String, region: String? = nil, location: GeoPoint? = nil) {
            self.endpoint = .cluster(BrokerLocator.Configuration(seeds: seeds, client: client, region: region, location: location))
            self.client = client
            self.initialBackoff = .seconds(1)
        }
    }

    /// Something the subscriber did, for logs and for tests.
    public enum Event: Sendable {
        case notification(Notification)
        /// Connected and resumed; `subscriptions` as the broker reported them.
        case connected(broker: String, subscriptions: [SubscriptionInfo])
        /// Moved to another broker on its request; the old connection is closed.
        case migrated(from: String, to: String, reason: String)
        /// The connection was lost; a reconnect follows after `retryIn`.
        case disconnected(error: String, retryIn: Duration)
        /// A subscription's position could not be resumed (retention or a recreated stream).
        case notRecovered(SubscriptionInfo)
        /// A request can never succeed as given (unknown channel, invalid parameters): the
        /// subscriber stops and the sequence ends after this event.
        case failed(TocsinError)
    }

    /// Counters over the subscriber's life, readable while it runs.
    public final class Statistics: Sendable {
        let duplicates = Atomic<Int>(0)
        let migrations = Atomic<Int>(0)
        let reconnects = Atomic<Int>(0)
        /// Notifications dropped because their seq had already been delivered.
        public var duplicatesDropped: Int { duplicates.load(ordering: .relaxed) }
        public var migrationsFollowed: Int { migrations.load(ordering: .relaxed) }
        public var reconnections: Int { reconnects.load(ordering: .relaxed) }
    }

    public let configuration: Configuration
    public let requests: [SubscriptionRequest]
    public let statistics = Statistics()
    let logger: Logger

    public init(configuration: Configuration, requests: [SubscriptionRequest], logger: Logger) {
        self.configuration = configuration
        self.requests = requests
        self.logger = logger
    }

    /// Runs until the consumer stops iterating (or the task is cancelled).
    ///
    /// A notification is acknowledged once the application has processed it, which is taken to
    /// be when it asks for the next element: one the app received but had not finished when its
    /// process died is delivered again after a restart, never lost.
    public func events() -> Events {
        let tracker = Tracker(ackEvery: configuration.ackEvery)
        let stream = AsyncStream<Event> { continuation in
            let task = Task { await self.run(continuation, tracker: tracker) }
            continuation.onTermination = { _ in
                // The app stopped iterating: acknowledge what it finished, then close.
                Task {
                    await tracker.flushBeforeStopping()
                    task.cancel()
                }
            }
        }
        return Events(stream: stream, tracker: tracker)
    }

    /// The subscriber's events; see `events()`.
    public struct Events: AsyncSequence, Sendable {
        public typealias Element = Event
        let stream: AsyncStream<Event>
        fileprivate let tracker: Tracker

        public struct AsyncIterator: AsyncIteratorProtocol {
            var base: AsyncStream<Event>.AsyncIterator
            fileprivate let tracker: Tracker
            var handedOut: (subscription: String, seq: Int64)?

            public mutating func next() async -> Event? {
                if let done = handedOut {
                    tracker.processed(subscription: done.subscription, seq: done.seq)
                    handedOut = nil
                }
                let event = await base.next()
                if case .notification(let n)? = event { handedOut = (n.subscription, n.seq) }
                return event
            }

            public mutating func next(isolation actor: isolated (any Actor)?) async -> Event? {
                if let done = handedOut {
                    tracker.processed(subscription: done.subscription, seq: done.seq)
                    handedOut = nil
                }
                let event = await base.next(isolation: actor)
                if case .notification(let n)? = event { handedOut = (n.subscription, n.seq) }
                return event
            }
        }

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(base: stream.makeAsyncIterator(), tracker: tracker)
        }
    }

    fileprivate final class Tracker: Sendable {
        /// Last seq yielded per subscription (and the epoch it belongs to).
        let positions = Mutex<[String: StreamPosition]>([:])
        let channels = Mutex<[String: String]>([:])
        /// Processed and not yet acknowledged, per subscription the newest seq.
        let unacked = Mutex<(positions: [String: Int64], count: Int)>(([:], 0))
        let subscribedOnce = Atomic<Bool>(false)
        let ackEvery: Int
        /// The live connections' ack loops (at most two, during a move), by generation.
        let ackWakers = Mutex<[Int: AsyncStream<Bool>.Continuation]>([:])

        /// Each live connection's "send the pending acks now", by generation.
        let flushers = Mutex<[Int: @Sendable () async -> Void]>([:])

        init(ackEvery: Int) { self.ackEvery = ackEvery }

        func flushBeforeStopping() async {
            for flush in flushers.withLock({ Array($0.values) }) { await flush() }
        }

        /// The application is done with a notification: acknowledge it with the next batch.
        func processed(subscription: String, seq: Int64) {
            let count = unacked.withLock { u -> Int in
                if seq > (u.positions[subscription] ?? .min) { u.positions[subscription] = seq }
                u.count += 1
                return u.count
            }
            if count == 1 || count == ackEvery {
                let now = count == ackEvery
                for waker in ackWakers.withLock({ Array($0.values) }) { waker.yield(now) }
            }
        }
    }

    fileprivate struct Target: Sendable {
        var url: String
        var broker: String?
    }

    /// What a connection reports to the loop that manages connections.
    fileprivate enum Signal: Sendable {
        case ready(generation: Int, broker: String, subscriptions: [SubscriptionInfo])
        case migrate(generation: Int, to: Target, reason: String)
        case ended(generation: Int, error: String)
        case failed(generation: Int, error: TocsinError)
    }

    /// Manages connections: at most a current one and, during a migration, the one replacing it.
    private func run(_ continuation: AsyncStream<Event>.Continuation, tracker: Tracker) async {
        let locator: BrokerLocator?
        if case .cluster(let c) = configuration.endpoint {
            locator = BrokerLocator(configuration: c, logger: logger)
        } else {
            locator = nil
        }
        let (signals, sink) = AsyncStream.makeStream(of: Signal.self)
        var tasks: [Int: Task<Void, Never>] = [:]
        var brokers: [Int: String] = [:]
        var generation = 0
        var current: Int?
        var replacing: (generation: Int, reason: String)?
        var attempt = 0
        var exclude: Set<String> = []
        var nextDelay: Duration? = .zero
        var iterator = signals.makeAsyncIterator()
        // Keep the broker list fresh while connected, so brokers that joined or left are known
        // before the next reconnect needs them.
        let refresher = locator.map { locator in
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: locator.configuration.refreshInterval)
                    if Task.isCancelled { break }
                    _ = try? await locator.refresh()
                }
            }
        }
        defer {
            refresher?.cancel()
            for task in tasks.values { task.cancel() }
        }

        func start(_ target: Target) -> Int {
            generation += 1
            let g = generation
            brokers[g] = target.broker ?? target.url
            tasks[g] = Task { await self.connection(g, to: target, tracker: tracker, continuation: continuation, signals: sink) }
            return g
        }

        while !Task.isCancelled {
            if current == nil, let delay = nextDelay {
                nextDelay = nil
                if delay > .zero { try? await Task.sleep(for: delay) }
                if Task.isCancelled { break }
                do {
                    current = start(try await self.locate(locator, exclude: exclude))
                } catch {
                    let retry = Self.backoff(attempt: attempt, initial: configuration.initialBackoff, max: configuration.maxBackoff)
                    attempt += 1
                    continuation.yield(.disconnected(error: "\(error)", retryIn: retry))
                    nextDelay = retry
                    continue
                }
            }
            guard let signal = await iterator.next() else { break }
            switch signal {
            case .ready(let g, let broker, let subscriptions):
                brokers[g] = broker
                if let r = replacing, r.generation == g {
                    // Make-before-break: the new connection is resumed; now close the old one.
                    let old = current.flatMap { brokers[$0] } ?? "?"
                    if let c = current { tasks.removeValue(forKey: c)?.cancel() }
                    current = g
                    replacing = nil
                    statistics.migrations.add(1, ordering: .relaxed)
                    continuation.yield(.migrated(from: old, to: broker, reason: r.reason))
                } else if g == current {
                    attempt = 0
                    exclude = []
                    continuation.yield(.connected(broker: broker, subscriptions: subscriptions))
                }
            case .migrate(let g, let target, let reason):
                guard g == current, replacing == nil else { continue }
                replacing = (start(target), reason)
            case .ended(let g, let error):
                tasks[g] = nil
                if let r = replacing, r.generation == g {
                    // The move failed. The old broker wants this client gone and will not ask
                    // again: leave it too, and reconnect wherever `assign` says (with backoff).
                    replacing = nil
                    logger.warning("migration failed; reconnecting through assign", metadata: ["error": "\(error)"])
                    if let c = current { tasks[c]?.cancel() }
                } else if g == current {
                    if let r = replacing {
                        // The old broker went away mid-move: the new connection carries on.
                        current = r.generation
                        replacing = nil
                    } else {
                        current = nil
                        if let b = brokers[g] { exclude.insert(b) }
                        let retry = Self.backoff(attempt: attempt, initial: configuration.initialBackoff, max: configuration.maxBackoff)
                        attempt += 1
                        statistics.reconnects.add(1, ordering: .relaxed)
                        logger.warning("connection lost; reconnecting", metadata: ["error": "\(error)", "retryIn": "\(retry)"])
                        continuation.yield(.disconnected(error: error, retryIn: retry))
                        nextDelay = retry
                    }
                }
                brokers[g] = nil
            case .failed(_, let error):
                logger.error("subscription request refused; stopping", metadata: ["code": "\(error.code)", "error": "\(error.message)"])
                continuation.yield(.failed(error))
                continuation.finish()
                return
            }
        }
        continuation.finish()
    }

    private func locate(_ locator: BrokerLocator?, exclude: Set<String>) async throws -> Target {
        switch configuration.endpoint {
        case .broker(let url):
            return Target(url: url, broker: nil)
        case .cluster:
            guard let locator else { throw TocsinError(.internalError, "no locator") }
            let broker = try await locator.locate(exclude: exclude)
            return Target(url: broker.webSocketURL, broker: broker.id)
        }
    }

    /// One connection: hello, subscribe, then deliver until it closes or is cancelled.
    fileprivate func connection(
        _ generation: Int, to target: Target, tracker: Tracker, continuation: AsyncStream<Event>.Continuation,
        signals: AsyncStream<Signal>.Continuation
    ) async {
        do {
            try await Connection.run(url: target.url, logger: logger) { connection in
                // Notifications that arrive while hello and subscribe are answered wait until the
                // positions are known; from then on they are handled on the read task directly.
                connection.bufferEvents()
                let (welcome, infos) = try await Self.within(configuration.setupTimeout, "hello and subscribe at \(target.url)") {
                    let welcome = try await connection.hello(client: configuration.client)
                    var infos = welcome.subscriptions
                    // The first time, start where the caller asked; afterwards the broker resumes
                    // from the acknowledged position (and duplicates are dropped by seq).
                    let firstTime = !tracker.subscribedOnce.load(ordering: .relaxed)
                    for request in requests {
                        let info = try await connection.subscribe(
                            channel: request.channel, params: request.params, from: firstTime ? request.from : .latest)
                        infos.removeAll { $0.subscription == info.subscription }
                        infos.append(info)
                    }
                    return (welcome, infos)
                }
                tracker.subscribedOnce.store(true, ordering: .relaxed)
                for info in infos { self.note(info, tracker: tracker, continuation: continuation) }
                signals.yield(.ready(generation: generation, broker: welcome.broker, subscriptions: infos))
                // Acks are cumulative: send the newest processed seq per subscription `ackInterval`
                // after the first unacknowledged one (or at once after `ackEvery` of them), not one
                // frame per notification; an idle subscriber sets no timers at all.
                let (ackDue, ackSignal) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .bufferingNewest(1))
                connection.handleEvents { message in
                    switch message {
                    case .notify(let subscription, let seq, let n):
                        self.accept(subscription: subscription, seq: seq, n, tracker: tracker, continuation: continuation)
                    case .subscribed(_, let info):
                        self.note(info, tracker: tracker, continuation: continuation)
                    case .migrate(let to, let broker, let reason):
                        signals.yield(.migrate(generation: generation, to: Target(url: to, broker: broker.isEmpty ? nil : broker), reason: reason))
                    case .error(_, let code, let message):
                        self.logger.warning("broker reported an error", metadata: ["code": "\(code)", "error": "\(message)"])
                    default:
                        break
                    }
                }
                tracker.ackWakers.withLock { $0[generation] = ackSignal }
                tracker.flushers.withLock { $0[generation] = { try? await self.flushAcks(tracker, on: connection) } }
                defer {
                    tracker.ackWakers.withLock { _ = $0.removeValue(forKey: generation) }
                    tracker.flushers.withLock { _ = $0.removeValue(forKey: generation) }
                }
                // Notifications processed but not yet acknowledged by a previous connection.
                if tracker.unacked.withLock({ $0.count }) > 0 { ackSignal.yield(false) }
                await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await now in ackDue {
                            if !now { try await Task.sleep(for: configuration.ackInterval) }
                            try await self.flushAcks(tracker, on: connection)
                        }
                    }
                    // `events` carries nothing now; it finishes when the connection closes.
                    for await _ in connection.events {}
                    ackSignal.finish()
                    group.cancelAll()
                }
                // Also when stopped (the app stopped iterating, or a move superseded this
                // connection): what the app finished is acknowledged on the way out.
                try? await self.flushAcks(tracker, on: connection)
                throw ConnectionClosed()
            }
            signals.yield(.ended(generation: generation, error: "the broker at \(TransportFailure.origin(of: target.url)) closed the connection"))
        } catch let error as TocsinError where Self.permanent.contains(error.code) {
            signals.yield(.failed(generation: generation, error: error))
        } catch is ConnectionClosed {
            signals.yield(.ended(generation: generation, error: "the broker at \(TransportFailure.origin(of: target.url)) closed the connection"))
        } catch {
            signals.yield(.ended(generation: generation, error: "\(error)"))
        }
    }

    /// Errors that retrying the same requests cannot cure.
    static let permanent: Set<TocsinError.Code> = [.unknownChannel, .invalidParams, .badRequest, .notIdentified]

    /// The result of `body`, or a timeout error after `limit`.
    static func within<T: Sendable>(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw TocsinError(.unavailable, "\(what) took longer than \(limit)")
            }
            return value
        }
    }

    fileprivate func flushAcks(_ tracker: Tracker, on connection: Connection) async throws {
        let pending = tracker.unacked.withLock { u in
            let p = u.positions
            u = ([:], 0)
            return p
        }
        var unsent = pending
        do {
            for (subscription, seq) in pending {
                try await connection.ack(subscription: subscription, seq: seq)
                unsent[subscription] = nil
            }
        } catch {
            // Not sent: keep them for the next connection (newer positions win).
            tracker.unacked.withLock { u in
                for (subscription, seq) in unsent where seq > (u.positions[subscription] ?? .min) { u.positions[subscription] = seq }
                u.count += unsent.count
            }
            throw error
        }
    }

    fileprivate func note(_ info: SubscriptionInfo, tracker: Tracker, continuation: AsyncStream<Event>.Continuation) {
        tracker.channels.withLock { if !info.channel.isEmpty { $0[info.subscription] = info.channel } }
        tracker.positions.withLock { p in
            if let known = p[info.subscription], known.epoch == info.position.epoch { return }
            // A new subscription, or a new epoch: seqs restart from the broker's position.
            p[info.subscription] = info.position
        }
        if !info.recovered { continuation.yield(.notRecovered(info)) }
    }

    /// Drops what was already delivered (by seq) and yields the rest. The check and the yield
    /// happen under one lock, so during a migration the two connections cannot interleave
    /// their notifications out of order. Returns whether anything was yielded.
    @discardableResult
    fileprivate func accept(
        subscription: String, seq: Int64, _ n: ServerMessage.Notification, tracker: Tracker, continuation: AsyncStream<Event>.Continuation
    ) -> Bool {
        let channel = tracker.channels.withLock { $0[subscription] } ?? ""
        return tracker.positions.withLock { p -> Bool in
            let last = p[subscription]?.seq
            if let last, seq <= last {
                statistics.duplicates.add(1, ordering: .relaxed)
                return false
            }
            if var position = p[subscription] {
                position.seq = seq
                p[subscription] = position
            }
            let notification: Notification
            switch n {
            case .event(let json):
                notification = Notification(
                    subscription: subscription, channel: channel, seq: seq, events: [EventPayload(seq: seq, json: json)], count: 1)
            case .events(let events):
                // A period's batch may overlap what another connection delivered: keep only the new events.
                let fresh = last.map { l in events.filter { $0.seq > l } } ?? events
                notification = Notification(subscription: subscription, channel: channel, seq: seq, events: fresh, count: fresh.count)
            case .count(let c):
                notification = Notification(subscription: subscription, channel: channel, seq: seq, events: [], count: c)
            }
            continuation.yield(.notification(notification))
            return true
        }
    }

    /// Full jitter: uniform in [0, min(max, initial·2^attempt)].
    static func backoff(attempt: Int, initial: Duration, max: Duration) -> Duration {
        Backoff(initial: initial, maximum: max).delay(attempt: attempt)
    }
}
