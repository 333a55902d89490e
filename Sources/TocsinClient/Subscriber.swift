public import Logging
import Synchronization
public import TocsinCore

/// A notification as the application sees it: duplicates already dropped.
public struct Notification: Sendable, Hashable {
    /// The subscription's id (`s_…`), as the broker reported it in `subscribed`.
    public var subscription: String
    /// The channel the subscription is to (empty if the broker never named it).
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
///
/// ```swift
/// let request = SubscriptionRequest(channel: "EmergenciesNearMe", params: ["lat": 52.37, "lon": 4.89, "radiusKm": 10])
/// ```
public struct SubscriptionRequest: Sendable, Hashable {
    /// The channel's name (`GET /v1/channels` lists them).
    public var channel: String
    /// Values for the channel's parameters, by name; parameters with a default may be left out.
    public var params: [String: JSONValue]
    /// Where delivery starts the first time this client subscribes. Afterwards the broker
    /// resumes from the acknowledged position and this is not used.
    public var from: StartPosition

    /// - Parameters:
    ///   - channel: The channel's name.
    ///   - params: Values for its parameters.
    ///   - from: Where delivery starts the first time: `.latest` (the default), `.earliest`, or
    ///     a position (`epoch` and `seq`) to continue after.
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
///
/// ```swift
/// let subscriber = Subscriber(
///     configuration: .init(seeds: ["http://127.0.0.1:7300"], client: "alice"),
///     requests: [SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": "fire"])],
///     logger: Logger(label: "alerts"))
/// for await event in subscriber.events() {
///     switch event {
///     case .notification(let n): print(n.seq, n.events)
///     case .disconnected(let error, let retryIn): print("lost (\(error)); retrying in \(retryIn)")
///     default: break
///     }
/// }
/// ```
public struct Subscriber: Sendable {
    /// Where to connect, under which client id, and the timings of retries and acks.
    public struct Configuration: Sendable {
        /// Where to connect: a fixed broker, or a network found through seed URLs.
        public enum Endpoint: Sendable {
            /// A broker's WebSocket URL (`ws://host:port/v1/ws`).
            case broker(String)
            /// HTTP URLs of any nodes of the network; the broker is chosen by `assign`.
            case cluster(BrokerLocator.Configuration)
        }

        /// Where to connect.
        public var endpoint: Endpoint
        /// The CAs a `wss://` broker's (and, for a network, every `https://` node's) certificate
        /// is verified against: the system's, plus a private CA's when given.
        public var trust: TLSTrust = .system
        /// The durable client id: the broker keeps this client's subscriptions and acknowledged
        /// positions under it, and holds one connection per id (a second one takes its place).
        public var client: String
        /// The ceiling of the first reconnect's random delay; it doubles with each failure in a row.
        public var initialBackoff: Duration = .milliseconds(100)
        /// The largest ceiling of a reconnect's random delay.
        public var maxBackoff: Duration = .seconds(10)
        /// How often acknowledged positions are sent (acks are cumulative).
        public var ackInterval: Duration = .milliseconds(100)
        /// Send acks early after this many notifications.
        public var ackEvery = 64
        /// Connecting, `hello` and every `subscribe` must finish within this, or the attempt
        /// counts as failed (a broker that accepts connections but does not answer).
        public var setupTimeout: Duration = .seconds(10)
        /// How often a WebSocket ping goes to the broker; a connection whose ping is not
        /// answered by the next one is dropped and the subscriber moves on. So a broker whose
        /// host vanishes without closing the connection (power, a cut link) is noticed within
        /// two periods. Shorter notices sooner and costs more wake-ups on phones.
        public var pingInterval: Duration = .seconds(15)
        /// The access token, when brokers require one: asked for before every hello and when a
        /// broker says the connection's token is about to expire (then sent in a `refresh`).
        /// Its client id must be `client`.
        public var token: (@Sendable () async throws -> String)?

        /// A subscriber of one broker.
        /// - Parameters:
        ///   - url: The broker's WebSocket URL, `ws://host:port/v1/ws`.
        ///   - client: The durable client id.
        public init(url: String, client: String) {
            self.endpoint = .broker(url)
            self.client = client
        }

        /// A subscriber of a network, which the controller's `assign` places on a broker
        /// (reconnects start at 1 s: a network's brokers come back in seconds, not milliseconds).
        /// - Parameters:
        ///   - seeds: HTTP URLs of any of the network's nodes, `http://host:port`.
        ///   - client: The durable client id.
        ///   - region: The region to prefer, if the network spans several.
        ///   - location: Where the client is, to prefer a broker near it.
        public init(seeds: [String], client: String, region: String? = nil, location: GeoPoint? = nil) {
            self.endpoint = .cluster(BrokerLocator.Configuration(seeds: seeds, client: client, region: region, location: location))
            self.client = client
            self.initialBackoff = .seconds(1)
        }
    }

    /// Something the subscriber did, for logs and for tests.
    public enum Event: Sendable, Equatable {
        /// A notification, each seq of a subscription once, in order.
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
        /// Moves to another broker on a broker's request, completed.
        public var migrationsFollowed: Int { migrations.load(ordering: .relaxed) }
        /// Connections lost (each followed by a reconnect).
        public var reconnections: Int { reconnects.load(ordering: .relaxed) }
    }

    /// Where it connects and how it retries.
    public let configuration: Configuration
    /// What it subscribes to on every connection.
    public let requests: [SubscriptionRequest]
    /// Counters over the subscriber's life.
    public let statistics = Statistics()
    let logger: Logger

    /// A subscriber; nothing happens until `events()` is iterated.
    /// - Parameters:
    ///   - configuration: Where to connect and how to retry.
    ///   - requests: The subscriptions to make (on every connection; the broker keeps them
    ///     durable under the client id).
    ///   - logger: Where warnings (a lost connection, a failed move) and errors go.
    public init(configuration: Configuration, requests: [SubscriptionRequest], logger: Logger) {
        self.configuration = configuration
        self.requests = requests
        self.logger = logger
    }

    /// Connects and delivers; runs until the consumer stops iterating (or its task is
    /// cancelled), then acknowledges what the app finished and closes. The sequence also ends
    /// after `.failed`. Each call is a run of its own.
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
        /// The subscriber's events.
        public typealias Element = Event
        let stream: AsyncStream<Event>
        let driver: Driver

        /// Iterates the events; asking for the next one acknowledges the previous notification.
        public struct AsyncIterator: AsyncIteratorProtocol {
            var base: AsyncStream<Event>.AsyncIterator
            let driver: Driver
            var handedOut: (subscription: String, seq: Int64)?

            /// The next event (the previous notification counts as processed), or nil when the run ended.
            public mutating func next() async -> Event? {
                if let done = handedOut {
                    driver.processed(subscription: done.subscription, seq: done.seq)
                    handedOut = nil
                }
                let event = await base.next()
                if case .notification(let n)? = event { handedOut = (n.subscription, n.seq) }
                return event
            }

            /// The next event, on the caller's actor; see `next()`.
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

        /// The one iterator of this run (iterate it from one task).
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
