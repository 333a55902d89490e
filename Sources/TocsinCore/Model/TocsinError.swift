/// An error a user can act on: a stable machine-readable code and a human message.
/// The broker maps it to an HTTP status and to the wire protocol's `error` message in one place.
public struct TocsinError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The body or frame is not valid JSON.
        public static let badJSON = Code(rawValue: "bad_json")
        /// A request is well-formed JSON but misses a field or has one of the wrong kind.
        public static let badRequest = Code(rawValue: "bad_request")
        /// An event does not conform to its stream's schema.
        public static let schemaViolation = Code(rawValue: "schema_violation")
        /// A stream definition is invalid.
        public static let invalidStream = Code(rawValue: "invalid_stream")
        /// A channel definition is invalid (syntax, types, parameters).
        public static let invalidChannel = Code(rawValue: "invalid_channel")
        /// Subscription parameters are missing or of the wrong type.
        public static let invalidParams = Code(rawValue: "invalid_params")
        /// A dataset definition is invalid (fields, key, indexes).
        public static let invalidDataset = Code(rawValue: "invalid_dataset")
        public static let unknownStream = Code(rawValue: "unknown_stream")
        public static let unknownChannel = Code(rawValue: "unknown_channel")
        public static let unknownDataset = Code(rawValue: "unknown_dataset")
        public static let unknownSubscription = Code(rawValue: "unknown_subscription")
        /// The frame's `type` is not one the server knows.
        public static let unknownMessage = Code(rawValue: "unknown_message")
        /// The body, frame or batch exceeds a configured limit.
        public static let tooLarge = Code(rawValue: "too_large")
        /// The request conflicts with current state: a stream redefined with other fields without
        /// `recreate`, or a channel with subscriptions redefined.
        public static let conflict = Code(rawValue: "conflict")
        /// A `hello` is required before this message.
        public static let notIdentified = Code(rawValue: "not_identified")
        public static let notFound = Code(rawValue: "not_found")
        /// The server is shutting down or not ready.
        public static let unavailable = Code(rawValue: "unavailable")
        /// A session's outbox overflowed; the server closes the connection after this error.
        public static let slowConsumer = Code(rawValue: "slow_consumer")
        /// A broker registration is malformed (id, URLs, region, location or capacity).
        public static let invalidRegistration = Code(rawValue: "invalid_registration")
        /// A heartbeat, drain or deregistration names a broker the controller does not know
        /// (never registered, or its lease expired): the broker must register again.
        public static let unknownBroker = Code(rawValue: "unknown_broker")
        /// A live broker with a different address already holds this id.
        public static let brokerIDInUse = Code(rawValue: "broker_id_in_use")
        /// A heartbeat from an older incarnation of a broker that has since registered again.
        public static let staleIncarnation = Code(rawValue: "stale_incarnation")
        /// No live broker can take a client (none registered, all draining, excluded or full).
        public static let noBrokerAvailable = Code(rawValue: "no_broker_available")
        /// The store has no room for the write: it reached its size limit (`--max-store-size`)
        /// or its disk is full. Nothing of the request was stored; the same request succeeds
        /// once retention or an operator frees space.
        public static let storeFull = Code(rawValue: "store_full")
        /// The store cannot be reached right now (its database is restarting, failing over or
        /// unreachable). Nothing of the request is known to be stored: retry it (with the same
        /// publish key, so a publish that did commit is not stored twice). HTTP 503 with `Retry-After`.
        public static let storeUnavailable = Code(rawValue: "store_unavailable")
        /// A deadline passed: an HTTP request's head or body did not arrive in time (408), or a
        /// WebSocket sent no first message in time. The connection is closed after it.
        public static let timeout = Code(rawValue: "timeout")
        /// The HTTP request target is longer than the server accepts (414).
        public static let uriTooLong = Code(rawValue: "uri_too_long")
        /// The HTTP request head is larger, or has more fields, than the server accepts (431).
        public static let headersTooLarge = Code(rawValue: "headers_too_large")
        /// The HTTP request method is not one the server knows (501).
        public static let notImplemented = Code(rawValue: "not_implemented")
        /// The request is not HTTP/1.0 or HTTP/1.1 (505).
        public static let httpVersionNotSupported = Code(rawValue: "http_version_not_supported")
        /// `GET /v1/ws` without a WebSocket upgrade, or with an unsupported WebSocket version (426).
        public static let upgradeRequired = Code(rawValue: "upgrade_required")
        /// A client already holds as many subscriptions as a broker allows one client
        /// (`maxSubscriptionsPerClient`): a new one is refused until it unsubscribes from some.
        public static let tooManySubscriptions = Code(rawValue: "too_many_subscriptions")
        /// An HTTP request used a method its path does not take (the `Allow` header lists those it does).
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        /// A broker call (register, heartbeat, drain, deregister) reached a controller that does
        /// not lead right now: try the leader (`leader`, when known) or the next controller (421).
        public static let notLeader = Code(rawValue: "not_leader")
        /// No token, or one that is malformed, forged (not signed by a key the server knows) or
        /// not yet valid (401 with `WWW-Authenticate: Bearer`).
        public static let unauthorized = Code(rawValue: "unauthorized")
        /// The token expired: get a fresh one (over a WebSocket: send it in a `refresh`) (401).
        public static let tokenExpired = Code(rawValue: "token_expired")
        /// The token is valid but does not allow this: it lacks the scope, or the subscription
        /// belongs to another client (403).
        public static let forbidden = Code(rawValue: "forbidden")
        /// Too many requests for this token (or address): retry after `retryAfterMs` (429 with `Retry-After`).
        public static let rateLimited = Code(rawValue: "rate_limited")
        /// A client id already holds as many connections to a broker as it may (429).
        public static let tooManyConnections = Code(rawValue: "too_many_connections")
        /// A state-changing request's body is not declared `Content-Type: application/json` (415).
        public static let unsupportedMediaType = Code(rawValue: "unsupported_media_type")
        /// A live configuration value is out of range or of the wrong type, the key is not a
        /// live setting (a startup flag says so, with the flag), or it does not apply to the role (422).
        public static let invalidSetting = Code(rawValue: "invalid_setting")
        /// An operator command is malformed: unknown kind, bad arguments, a role that does not
        /// take it, or a timeout out of range (422).
        public static let invalidCommand = Code(rawValue: "invalid_command")
        /// A command or setting names a component that is not live and was not seen lately, or a
        /// role with no live component (404).
        public static let unknownComponent = Code(rawValue: "unknown_component")
        /// A bug or an unexpected store failure; details are in the server log.
        public static let internalError = Code(rawValue: "internal")
    }

    public var code: Code
    public var message: String
    /// With `not_leader`: the leading controller's URL, when known (the error body's `leader`).
    public var leader: String?
    /// With `rate_limited`: how long to wait before retrying, in milliseconds (`retryAfterMs`).
    public var retryAfterMillis: Int64?

    public init(_ code: Code, _ message: String, leader: String? = nil, retryAfterMillis: Int64? = nil) {
        self.code = code
        self.message = message
        self.leader = leader
        self.retryAfterMillis = retryAfterMillis
    }

    public var description: String { "\(code): \(message)" }
}
