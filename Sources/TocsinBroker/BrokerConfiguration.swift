public import TocsinCore
public import TocsinHTTP
public import TocsinHTTPClient
public import Tracing

/// Everything a broker needs to know, with defaults for the embedded `tocsin serve`.
/// Filled at the edge from flags and environment; tests build it directly. The store is
/// configured apart (`StoreConfiguration`) and handed to `buildBroker` open.
public struct BrokerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port; read it back from `onListening`.
    public var port = 7400
    /// The broker's id, reported in `welcome`.
    public var brokerID = "broker-1"
    /// Create the example `emergencies` stream and its channels in an empty store.
    public var seedExample = true

    /// Who may do what (docs/security.md): tokens checked by a verifier, or `.disabled`
    /// (`--insecure-no-auth`). The commands never leave it disabled unless told to.
    public var authentication: Authentication = .disabled
    /// Origins whose browser pages may call the broker (CORS) and open WebSockets; `*` is any.
    /// Empty (the default): none but the broker's own.
    public var allowedOrigins: [String] = []
    /// Per-client rate limits and connection caps (docs/security.md).
    public var limits = RateLimits()
    /// Where the broker's spans go (`BrokerTracing`): publish, commit and each delivery of a
    /// traced event. nil (the default): no spans, and nothing on the delivery path looks at traces.
    public var tracer: (any Tracer)?
    /// With a tracer: how many live notifications of one traced event get a `deliver` span on
    /// this broker (replayed ones always do). `Int.max`: every one.
    public var deliverySpansPerEvent = 10
    /// How long before a WebSocket connection's token expires the broker sends `token_expiring`.
    public var tokenExpiryWarning: Duration = .seconds(60)

    /// Largest HTTP request body.
    public var maxBodyBytes = 4 << 20
    /// Largest WebSocket message a client may send; larger ones get a `too_large` error.
    public var maxMessageBytes = 1 << 20
    /// Most events in one publish batch.
    public var maxBatchEvents = 10_000
    /// Publishes one WebSocket connection may have committing at once. The connection's next
    /// frames are read while they commit (so a client can pipeline publishes, and they share
    /// commits); past this many the broker stops reading from it until one is answered.
    public var maxPipelinedPublishes = 256
    /// The same limit in bytes of those publishes' messages (a larger message is read alone).
    public var maxPipelinedPublishBytes = 8 << 20
    /// The same limit for the whole broker, across connections: past it, readers wait their
    /// turn until commits free enough (`PublishBudget`).
    public var maxPipelinedPublishBytesTotal = 256 << 20
    /// Bytes a WebSocket connection may have pending (queued notifications plus what its socket
    /// has not taken yet) before it counts as a slow consumer: it gets `slow_consumer` and a 1008
    /// close, and resumes from its acknowledged position when it reconnects. Replays wait for
    /// room instead of counting against it.
    public var maxOutboundBytes = 2 << 20
    /// A WebSocket connection that sends no message within this of its upgrade is closed
    /// (`timeout`, 1008).
    public var firstMessageTimeout: Duration = .seconds(10)
    /// A WebSocket connection is pinged once per period; one that sends nothing at all (no pong,
    /// no other frame) for a whole period after a ping is closed (1001, "ping timeout").
    public var keepalivePeriod: Duration = .seconds(30)
    /// How long a connection being closed by the broker (slow consumer, timeout) is given to
    /// take its last frames before its socket is closed anyway.
    public var closeGrace: Duration = .seconds(5)
    /// Deadlines and size limits of every HTTP request (heads, bodies, targets).
    public var http = HTTPEdgeLimits()
    /// On graceful shutdown (SIGTERM), how long connections are given to finish before the
    /// broker closes what is left and exits.
    public var shutdownGrace: Duration = .seconds(10)
    /// Most durable subscriptions one client id may hold; a `subscribe` that would create one
    /// more fails with `too_many_subscriptions`. 10,000 keeps a `welcome` listing them all under
    /// about 3 MB and a takeover of them all well under a second; nil: no limit.
    public var maxSubscriptionsPerClient: Int? = 10_000

    /// The notify-then-fetch result cache (`ResultCache`): most pages kept, and most bytes of
    /// event JSON they hold; 0 entries turns it off.
    public var fetchCacheEntries = 10_000
    public var fetchCacheBytes = 64 << 20

    /// How often acknowledged cursors are written to the store.
    public var ackFlushInterval: Duration = .milliseconds(200)
    /// How often retention is enforced.
    public var retentionInterval: Duration = .seconds(30)
    /// How often the store's size is measured for its gauges.
    public var storeGaugeInterval: Duration = .seconds(5)
    /// How often memory freed since is handed back to the system (`MemoryTrim`); zero never.
    public var memoryTrimInterval: Duration = .seconds(10)

    /// How often each event loop is probed (`EventLoopWatch`), and how late a probe may run
    /// before the loop counts as blocked.
    public var eventLoopWatchInterval: Duration = .seconds(1)
    public var eventLoopStallThreshold: Duration = .milliseconds(200)

    /// The process's log level, which `log.level` and the `log-level` command change; nil
    /// (embedded in a test): those change nothing.
    public var logLevel: LogLevelControl? = nil

    /// Membership of a broker network run by a controller; nil for a standalone broker.
    public var cluster: ClusterSettings? = nil

    /// Serve HTTPS and WSS with this certificate (reloaded by whoever holds it); nil: plain
    /// HTTP and WS. The broker then advertises `https://` and `wss://` URLs.
    public var tls: TLSCertificateSource? = nil

    /// `https` with TLS, else `http`: the scheme of the URLs the broker advertises.
    public var scheme: String { tls == nil ? "http" : "https" }

    public init() {}
}

/// How a broker joins a network (`tocsin broker --controller URL[,URL…]`).
public struct ClusterSettings: Sendable {
    /// The cluster credential the broker presents to its controllers (a token with the `cluster`
    /// scope); nil when the network runs without authentication.
    public var credential: TokenSource?
    /// The controllers' HTTP URLs: the broker talks to the one that leads, and moves on to the
    /// next (or to the leader a follower names) when one fails or answers `not_leader`.
    public var controllerURLs: [String]
    /// The first controller's URL.
    public var controllerURL: String { controllerURLs[0] }
    /// This broker's HTTP URL as clients reach it (its WebSocket URL is derived: ws(s)://…/v1/ws).
    /// Unset, the broker advertises its bind address, which must then be a concrete one.
    public var advertisedURL: String?
    public var region = "local"
    public var location: GeoPoint?
    /// Most client connections the controller sends here.
    public var capacity = 10_000
    /// On graceful shutdown, how long to wait for clients to migrate away before closing.
    public var drainTimeout: Duration = .seconds(15)
    /// The CAs an `https://` controller's certificate is verified against.
    public var controllerTrust: TLSTrust = .system
    /// A client told to migrate that is still here after this long is disconnected (it then
    /// reconnects through `assign`); until then the controller plans no further moves.
    public var migrationTimeout: Duration = .seconds(30)

    public init(controllerURL: String) {
        self.controllerURLs = [controllerURL]
    }

    /// `urls` must not be empty.
    public init(controllerURLs urls: [String]) {
        precondition(!urls.isEmpty, "a broker of a network needs at least one controller URL")
        self.controllerURLs = urls
    }

    /// `http://h:p` → `ws://h:p/v1/ws` (https → wss).
    public static func webSocketURL(forHTTP http: String) -> String { BaseURL.webSocketURL(forHTTP: http) }
}
