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

/// A durable subscriber that survives broker restarts: it connects, says hello (the broker
/// resumes its durable subscriptions from their acknowledged positions), subscribes to what it
/// wants, yields notifications in order, acknowledges them, drops duplicates by seq, and on a
/// lost connection reconnects with exponential backoff and jitter and resumes.
public struct Subscriber: Sendable {
    public struct Configuration: Sendable {
        public var url: String
        public var client: String
        public var initialBackoff: Duration = .milliseconds(100)
        public var maxBackoff: Duration = .seconds(10)
        /// How often acknowledged positions are sent (acks are cumulative).
        public var ackInterval: Duration = .milliseconds(100)
        /// Send acks early after this many notifications.
        public var ackEvery = 64

        public init(url: String, client: String) {
            self.url = url
            self.client = client
        }
    }

    /// Something the subscriber did, for logs and for tests.
    public enum Event: Sendable {
        case notification(Notification)
        /// Connected and resumed; `subscriptions` as the broker reported them.
        case connected(broker: String, subscriptions: [SubscriptionInfo])
        /// The connection was lost; a reconnect follows after `retryIn`.
        case disconnected(error: String, retryIn: Duration)
        /// A subscription's position could not be resumed (retention or a recreated stream).
        case notRecovered(SubscriptionInfo)
    }

    public let configuration: Configuration
    public let requests: [SubscriptionRequest]
    let logger: Logger

    public init(configuration: Configuration, requests: [SubscriptionRequest], logger: Logger) {
        self.configuration = configuration
        self.requests = requests
        self.logger = logger
    }

    /// Runs until the consumer stops iterating (or the task is cancelled).
    public func events() -> AsyncStream<Event> {
        AsyncStream { continuation in
            let task = Task { await self.run(continuation) }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private final class Tracker: Sendable {
        /// Last seq yielded per subscription (and the epoch it belongs to).
        let positions = Mutex<[String: StreamPosition]>([:])
        let channels = Mutex<[String: String]>([:])
        let unacked = Mutex<(positions: [String: Int64], count: Int)>(([:], 0))
        let subscribedOnce = Atomic<Bool>(false)
        let connectedAt = Atomic<Int>(0)
    }

    private func run(_ continuation: AsyncStream<Event>.Continuation) async {
        let tracker = Tracker()
        var attempt = 0
        while !Task.isCancelled {
            do {
                try await Connection.run(url: configuration.url, logger: logger) { connection in
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
                    tracker.subscribedOnce.store(true, ordering: .relaxed)
                    tracker.connectedAt.add(1, ordering: .relaxed)
                    for info in infos { self.note(info, tracker: tracker, continuation: continuation) }
                    continuation.yield(.connected(broker: welcome.broker, subscriptions: infos))
                    // Acks are cumulative: send the newest seq per subscription every `ackInterval`
                    // (or after `ackEvery` notifications), not one frame per notification.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            while true {
                                try await Task.sleep(for: configuration.ackInterval)
                                try await self.flushAcks(tracker, on: connection)
                            }
                        }
                        for await message in connection.events {
                            switch message {
                            case .notify(let subscription, let seq, let n):
                                guard let notification = self.accept(subscription: subscription, seq: seq, n, tracker: tracker) else { continue }
                                continuation.yield(.notification(notification))
                                let unacked = tracker.unacked.withLock { u in
                                    u.positions[subscription] = seq
                                    u.count += 1
                                    return u.count
                                }
                                if unacked >= configuration.ackEvery { try await self.flushAcks(tracker, on: connection) }
                            case .subscribed(_, let info):
                                self.note(info, tracker: tracker, continuation: continuation)
                            default:
                                continue
                            }
                        }
                        group.cancelAll()
                    }
                    try? await self.flushAcks(tracker, on: connection)
                    throw ConnectionClosed()
                }
                break
            } catch {
                if Task.isCancelled { break }
                // A connection that got as far as subscribing starts the backoff over.
                if tracker.connectedAt.exchange(0, ordering: .relaxed) > 0 { attempt = 0 }
                let delay = Self.backoff(attempt: attempt, initial: configuration.initialBackoff, max: configuration.maxBackoff)
                continuation.yield(.disconnected(error: "\(error)", retryIn: delay))
                attempt += 1
                try? await Task.sleep(for: delay)
            }
        }
        continuation.finish()
    }

    private func flushAcks(_ tracker: Tracker, on connection: Connection) async throws {
        let pending = tracker.unacked.withLock { u in
            let p = u.positions
            u = ([:], 0)
            return p
        }
        for (subscription, seq) in pending { try await connection.ack(subscription: subscription, seq: seq) }
    }

    private func note(_ info: SubscriptionInfo, tracker: Tracker, continuation: AsyncStream<Event>.Continuation) {
        tracker.channels.withLock { if !info.channel.isEmpty { $0[info.subscription] = info.channel } }
        tracker.positions.withLock { p in
            if let known = p[info.subscription], known.epoch == info.position.epoch { return }
            // A new subscription, or a new epoch: seqs restart from the broker's position.
            p[info.subscription] = info.position
        }
        if !info.recovered { continuation.yield(.notRecovered(info)) }
    }

    /// Drops a notification already seen (by seq); returns it otherwise.
    private func accept(subscription: String, seq: Int64, _ n: ServerMessage.Notification, tracker: Tracker) -> Notification? {
        let fresh = tracker.positions.withLock { p -> Bool in
            guard var position = p[subscription] else { return true }
            guard seq > position.seq else { return false }
            position.seq = seq
            p[subscription] = position
            return true
        }
        guard fresh else { return nil }
        let channel = tracker.channels.withLock { $0[subscription] } ?? ""
        switch n {
        case .event(let json):
            return Notification(subscription: subscription, channel: channel, seq: seq, events: [EventPayload(seq: seq, json: json)], count: 1)
        case .events(let events):
            return Notification(subscription: subscription, channel: channel, seq: seq, events: events, count: events.count)
        case .count(let c):
            return Notification(subscription: subscription, channel: channel, seq: seq, events: [], count: c)
        }
    }

    /// Exponential backoff with full jitter in [d/2, d], so many clients of a dead broker do
    /// not come back in lockstep.
    static func backoff(attempt: Int, initial: Duration, max: Duration) -> Duration {
        let factor = 1 << min(attempt, 16)
        let ceiling = min(initial * factor, max)
        let ms = Double(ceiling.components.seconds) * 1000 + Double(ceiling.components.attoseconds) / 1e15
        return .milliseconds(Int64(ms * Double.random(in: 0.5...1.0)))
    }
}
