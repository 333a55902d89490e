import Logging
public import TocsinCore
// HTTPCall and TransportFailure are part of the client library's API.
@_exported public import TocsinHTTPClient

/// The entry point an app uses: one client id, the network's seed URLs, and subscriptions as
/// async sequences of notifications.
///
/// ```swift
/// let tocsin = TocsinClient(seeds: ["http://127.0.0.1:7300"], client: "alice")
/// for await n in tocsin.subscribe("EmergenciesNearMe", params: ["lat": 52.37, "lon": 4.89, "radiusKm": 10]) {
///     print(n.seq, n.events)
/// }
/// ```
///
/// Each subscription runs a `Subscriber`: it finds a broker through the controller, resumes
/// after failures and follows migrations; the sequence carries each matching event once, in
/// order. Use `Subscriber` directly to also see connection events or several channels on one
/// connection.
public struct TocsinClient: Sendable {
    /// HTTP URLs of any of the network's nodes.
    public let seeds: [String]
    /// The app's client id; each subscription's durable id is derived from it (`clientID`).
    public let client: String
    /// The region to prefer, if the network spans several.
    public var region: String?
    /// Where the app is, to prefer a broker near it.
    public var location: GeoPoint?
    /// The CAs `https://` and `wss://` nodes' certificates are verified against.
    public let trust: TLSTrust
    let logger: Logger
    /// The access token every subscription and publish carries, if any.
    let token: TokenSource?
    /// Shared by every `publish` (and every copy of this value), so they keep one broker.
    let publisher: Publisher

    /// A client of a network; nothing connects until a subscription is iterated or a publish made.
    /// - Parameters:
    ///   - seeds: HTTP URLs of any of the network's nodes (`http://host:port`): brokers or the
    ///     controller; one standalone broker works too.
    ///   - client: The app's client id, stable across runs: positions are kept under it.
    ///   - region: The region to prefer, if the network spans several.
    ///   - location: Where the app is, to prefer a broker near it.
    ///   - trust: The CAs `https://` and `wss://` nodes' certificates are verified against: the
    ///     system's by default; `TLSTrust(caFile:)` adds a private CA's.
    ///   - logger: Where the subscriptions and the publisher log.
    ///   - token: The access token, when the network requires one: its client id must be
    ///     `client` (each subscription connects as `<client>#…`, which the token covers).
    public init(
        seeds: [String], client: String, region: String? = nil, location: GeoPoint? = nil, trust: TLSTrust = .system,
        logger: Logger = Logger(label: "tocsin.client"), token: TokenSource? = nil
    ) {
        self.token = token
        self.seeds = seeds
        self.client = client
        self.region = region
        self.location = location
        self.trust = trust
        self.logger = logger
        self.publisher = Publisher(seeds: seeds, client: client + "-publisher", trust: trust, logger: logger, token: token)
    }

    /// Notifications of one channel with these parameters, until the consumer stops iterating.
    /// The sequence ends if the subscription can never work (unknown channel, invalid parameters;
    /// the reason is logged).
    ///
    /// Each subscription has a connection of its own, durable under the client id
    /// `<client>#<channel>#<hash of the parameters>`: the broker keeps one connection per
    /// client id, so two subscriptions sharing one id would take each other's place.
    ///
    /// - Parameters:
    ///   - channel: The channel's name.
    ///   - params: Values for its parameters.
    ///   - from: Where delivery starts the first time this subscription is made; afterwards it
    ///     resumes after the last notification the app finished.
    /// - Returns: The notifications, as an async sequence.
    public func subscribe(_ channel: String, params: [String: JSONValue] = [:], from: StartPosition = .latest) -> Notifications {
        var configuration = Subscriber.Configuration(
            seeds: seeds, client: Self.clientID(client, channel: channel, params: params), region: region, location: location)
        configuration.token = token
        configuration.trust = trust
        let subscriber = Subscriber(
            configuration: configuration,
            requests: [SubscriptionRequest(channel: channel, params: params, from: from)], logger: logger)
        return Notifications(events: subscriber.events())
    }

    /// The notifications of one subscription. A notification is acknowledged when the next one
    /// is asked for, so what the app had not finished when it died comes again after a restart.
    public struct Notifications: AsyncSequence, Sendable {
        /// One notification.
        public typealias Element = Notification
        let events: Subscriber.Events

        /// Iterates the notifications; asking for the next one acknowledges the previous one.
        public struct AsyncIterator: AsyncIteratorProtocol {
            var base: Subscriber.Events.AsyncIterator

            /// The next notification, or nil when the subscription can never work.
            public mutating func next() async -> Notification? {
                while let event = await base.next() {
                    switch event {
                    case .notification(let n): return n
                    case .failed: return nil
                    default: continue
                    }
                }
                return nil
            }
        }

        /// The one iterator of this subscription (iterate it from one task).
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: events.makeAsyncIterator()) }
    }

    /// The durable client id of one subscription: stable across runs and processes.
    /// - Returns: `<client>#<channel>#<hash of the parameters>`.
    public static func clientID(_ client: String, channel: String, params: [String: JSONValue]) -> String {
        let canonical = params.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.serialized)" }.joined(separator: "&")
        let hash = String(StableHash.hash(canonical), radix: 16)
        return "\(client)#\(channel)#\(hash)"
    }

    /// Publishes events to a stream through the network; returns their seqs once committed.
    /// All publishes of this value and its copies share one `Publisher` (and its broker).
    ///
    /// ```swift
    /// let seqs = try await tocsin.publish("emergencies", events: [["kind": "fire", "severity": 4, ...]])
    /// ```
    /// - Parameters:
    ///   - stream: The stream's name.
    ///   - events: The events, each a JSON object of the stream's schema.
    /// - Returns: The events' seqs, in order.
    /// - Throws: As `Publisher.publish(stream:events:key:)`.
    public func publish(_ stream: String, events: [JSONValue]) async throws -> [Int64] {
        try await publisher.publish(stream: stream, events: events).seqs
    }
}
