/// Everything a broker needs to know, with defaults for the embedded `tocsin serve`.
/// Filled at the edge from flags and environment; tests build it directly.
public struct BrokerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port; read it back from `onListening`.
    public var port = 7400
    /// The broker's id, reported in `welcome`.
    public var brokerID = "broker-1"
    /// The SQLite file, under the data directory by default.
    public var databasePath = "./tocsin-data/tocsin.sqlite"
    /// FULL synchronous SQLite commits (survive power loss); false means NORMAL (survive process crashes).
    public var durableCommits = true
    /// Create the example `emergencies` stream and its channels in an empty store.
    public var seedExample = true

    /// Largest HTTP request body.
    public var maxBodyBytes = 4 << 20
    /// Largest WebSocket message a client may send; larger ones get a `too_large` error.
    public var maxMessageBytes = 1 << 20
    /// Most events in one publish batch.
    public var maxBatchEvents = 10_000
    /// Frames a session may have queued before it counts as a slow consumer and is disconnected.
    public var maxQueuedFrames = 50_000
    /// Bytes a connection may have waiting for its socket before it counts as a slow consumer.
    public var maxBufferedBytes = 16 << 20

    /// How often acknowledged cursors are written to the store.
    public var ackFlushInterval: Duration = .milliseconds(200)
    /// How often retention is enforced.
    public var retentionInterval: Duration = .seconds(30)
    /// How often to look for appends by other processes sharing the store; nil if none do.
    public var storePollInterval: Duration? = nil

    public init() {}
}
