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
    public enum Event: Sendable, Equatable {
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
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self)
        let driver = Driver(self, continuation: continuation)
        // The app stopped iterating: acknowledge what it finished, then close.
        continuation.onTermination = { _ in Task { await driver.stop() } }
        driver.start()
        return Events(stream: stream, driver: driver)
    }

    /// The subscriber's events; see `events()`.
    public struct Events: AsyncSequence, Sendable {
        public typealias Element = Event
        let stream: AsyncStream<Event>
        let driver: Driver

        public struct AsyncIterator: AsyncIteratorProtocol {
            var base: AsyncStream<Event>.AsyncIterator
            let driver: Driver
            var handedOut: (subscription: String, seq: Int64)?

            public mutating func next() async -> Event? {
                if let done = handedOut {
                    driver.processed(subscription: done.subscription, seq: done.seq)
                    handedOut = nil
                }
                let event = await base.next()
                if case .notification(let n)? = event { handedOut = (n.subscription, n.seq) }
                return event
            }

            public mutating func next(isolation actor: isolated (any Actor)?) async -> Event? {
                if let done = handedOut {
                    driver.processed(subscription: done.subscription, seq: done.seq)
                    handedOut = nil
                }
                let event = await base.next(isolation: actor)
                if case .notification(let n)? = event { handedOut = (n.subscription, n.seq) }
                return event
            }
        }

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(base: stream.makeAsyncIterator(), driver: driver)
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
}
