public import ServiceLifecycle
public import TocsinCore

/// A stream as stored: its definition, the current epoch and the range of retained seqs.
public struct StreamInfo: Sendable, Hashable {
    public var definition: StreamDefinition
    /// Changes when the stream is recreated; positions from another epoch cannot be resumed.
    public var epoch: String
    /// The seq of the newest event (0 when none was ever appended in this epoch).
    public var lastSeq: Int64
    /// The seq of the oldest retained event (lastSeq + 1 when none is retained).
    public var firstSeq: Int64
    public var createdAtMillis: Int64

    public var name: String { definition.name }
}

/// A durable subscription: a client's interest in a channel with bound parameters, and how far
/// the client has acknowledged it.
public struct SubscriptionRecord: Sendable, Hashable {
    public var id: String
    public var client: String
    public var channel: String
    /// The bound parameters (defaults filled in), as a JSON object.
    public var params: [String: JSONValue]
    /// The acknowledged position: every matching event up to `ackedSeq` in `epoch` was acked.
    public var epoch: String
    public var ackedSeq: Int64
}

/// A dataset as stored: its definition, its version (every write batch adds one) and how many
/// records it holds.
public struct DatasetInfo: Sendable, Hashable {
    public var definition: DatasetDefinition
    public var version: Int64
    public var count: Int64

    public var name: String { definition.name }
}

/// One write of a batch as stored: the key's canonical JSON (`"s1"`, `17`), the record's
/// canonical JSON (`StreamSchema.json(of:)`) or nil to delete the key, and the change event
/// that records it in the dataset's change stream (`DatasetDefinition.changeEvent`).
public struct DatasetRecordWrite: Sendable, Hashable {
    public var key: String
    public var body: String?
    public var change: String

    public init(key: String, body: String?, change: String) {
        self.key = key
        self.body = body
        self.change = change
    }

    /// A validated write as the store keeps it.
    public init(_ write: DatasetWrite, definition: DatasetDefinition) {
        switch write {
        case .upsert(let record):
            self.init(key: Self.text(record[definition.keySlot]), body: definition.schema.json(of: record), change: definition.changeEvent(write))
        case .delete(let key):
            self.init(key: Self.text(key), body: nil, change: definition.changeEvent(write))
        }
    }

    /// A key's canonical JSON text.
    public static func text(_ key: Value) -> String {
        var out = ""
        key.writeJSON(into: &out)
        return out
    }
}

/// Records of a dataset in key order (of their canonical JSON text), and the version they were
/// read at: one consistent read.
public struct DatasetPage: Sendable, Hashable {
    public struct Row: Sendable, Hashable {
        public var key: String
        public var body: String

        public init(key: String, body: String) {
            self.key = key
            self.body = body
        }
    }

    public var version: Int64
    public var records: [Row]

    public init(version: Int64, records: [Row]) {
        self.version = version
        self.records = records
    }
}

/// Where an append's events went.
public struct Appended: Sendable, Hashable {
    public var epoch: String
    /// Consecutive, in the order the events were given.
    public var seqs: [Int64]
    /// The key had been stored: nothing was appended, `seqs` are the first append's.
    public var duplicate: Bool

    public init(epoch: String, seqs: [Int64], duplicate: Bool = false) {
        self.epoch = epoch
        self.seqs = seqs
        self.duplicate = duplicate
    }
}

extension Store {
    public func checkReadable() async throws {
        _ = try await streams()
    }

    /// `openSubscription` without a per-client limit.
    public func openSubscription(
        client: String, channel: String, params: [String: JSONValue], initial: StreamPosition
    ) async throws -> (SubscriptionRecord, created: Bool) {
        try await openSubscription(client: client, channel: channel, params: params, initial: initial, maxPerClient: nil)
    }

    public func append(stream: String, events: [String]) async throws -> Appended {
        try await append(stream: stream, events: events, key: nil, trace: nil)
    }

    /// An append of events no trace follows.
    public func append(stream: String, events: [String], key: String?) async throws -> Appended {
        try await append(stream: stream, events: events, key: key, trace: nil)
    }

    /// An append of events no trace follows, without waiting.
    public func append(stream: String, events: [String], key: String?, completion: @escaping @Sendable (Result<Appended, any Error>) -> Void) {
        append(stream: stream, events: events, key: key, trace: nil, completion: completion)
    }
}

/// How much room a store takes and may take (`tocsin_store_used_bytes`, `tocsin_store_max_bytes`).
public struct StoreUsage: Sendable, Equatable {
    /// Bytes holding data.
    public var usedBytes: Int64
    /// Bytes the store has taken, used or free for reuse (SQLite: the database file's pages).
    public var allocatedBytes: Int64
    /// The most the store may take, if limited: past it, writes that need room fail with `store_full`.
    public var maxBytes: Int64?

    public init(usedBytes: Int64, allocatedBytes: Int64, maxBytes: Int64?) {
        self.usedBytes = usedBytes
        self.allocatedBytes = allocatedBytes
        self.maxBytes = maxBytes
    }
}

/// What the store did with `putStream`.
public enum PutOutcome: Sendable, Hashable {
    case created
    case unchanged
    case updated
    /// Dropped every event and started a new epoch.
    case recreated
}

/// The source of truth (design.md, "store"), and all the broker knows of it: the broker and
/// its builder take `any Store`, and `StoreConfiguration` picks one at the edge. SQLite is the
/// embedded default. Every store passes the conformance suite (Tests/TocsinStoreTests,
/// `StoreConformanceTests`).
public protocol Store: Sendable {
    func putStream(_ definition: StreamDefinition, recreate: Bool) async throws -> (StreamInfo, PutOutcome)
    func streams() async throws -> [StreamInfo]
    func stream(named name: String) async throws -> StreamInfo?

    /// Appends events (canonical JSON, already validated) in one all-or-nothing batch, group
    /// committed with other concurrent appends. Returns after the commit is durable. With a
    /// `key` (`PublishKey`) that the stream stored within the dedupe window, nothing is stored
    /// and the result is the first append's, marked `duplicate`; the check and the append are
    /// one transaction, so of concurrent appends with one key exactly one is stored. `trace`:
    /// the publish's W3C `traceparent`, stored with each event (`StoredEvent.trace`).
    func append(stream: String, events: [String], key: String?, trace: String?) async throws -> Appended
    /// The same append, without waiting: returns at once and calls `completion` once the batch
    /// is durable or has failed. Appends made one after another complete in that order, so a
    /// connection can pipeline publishes and still answer them in order. `completion` runs on
    /// the store's commit thread, while it holds the writer: it must be brief and must not
    /// block. (Once the store is closed, which only happens when it is freed, an append fails
    /// at once with `unavailable` on the caller's thread.)
    func append(
        stream: String, events: [String], key: String?, trace: String?, completion: @escaping @Sendable (Result<Appended, any Error>) -> Void)
    /// Events with seq > `after`, oldest first.
    func readEvents(stream: String, after: Int64, limit: Int) async throws -> [StoredEvent]

    /// Creates or replaces a channel. Replacing a channel that has subscriptions with a different
    /// definition is a `conflict` (their parameters and filter would change under them).
    func putChannel(_ definition: ChannelDefinition) async throws -> PutOutcome
    func channels() async throws -> [ChannelDefinition]
    func deleteChannel(named name: String) async throws -> Bool

    /// Creates a dataset, or redefines an empty one. Redefining a dataset that holds records
    /// with a different definition is a `conflict` (delete it first).
    func putDataset(_ definition: DatasetDefinition) async throws -> PutOutcome
    func datasets() async throws -> [DatasetInfo]
    /// Deletes a dataset and its records.
    func deleteDataset(named name: String) async throws -> Bool
    /// Applies the writes in order in one transaction (all or nothing), appending their change
    /// events to the dataset's change stream in the same transaction, through the same group
    /// commit as publishes. Returns the dataset's new version: the seq of the last change
    /// event. `unknown_dataset` if there is no such dataset.
    func writeDataset(_ name: String, writes: [DatasetRecordWrite]) async throws -> Int64
    /// Up to `limit` records with keys after `afterKey` (nil: from the first), in key order,
    /// with the version they were read at.
    func readDataset(_ name: String, afterKey: String?, limit: Int) async throws -> DatasetPage

    /// The client's subscription to `channel` with exactly these bound params, creating it at
    /// `initial` if it does not exist. `created` tells which happened. With `maxPerClient`, a
    /// client that already has that many subscriptions gets no new one (`too_many_subscriptions`);
    /// the count and the insert are one transaction.
    func openSubscription(
        client: String, channel: String, params: [String: JSONValue], initial: StreamPosition, maxPerClient: Int?
    ) async throws -> (SubscriptionRecord, created: Bool)
    func subscriptions(client: String) async throws -> [SubscriptionRecord]
    func subscription(id: String) async throws -> SubscriptionRecord?
    func deleteSubscription(id: String) async throws -> Bool
    /// Persists acknowledged positions in one transaction. A position older than the stored one is ignored.
    func saveAcks(_ acks: [String: StreamPosition]) async throws

    /// Deletes events outside their stream's retention. Returns how many were deleted.
    func enforceRetention(nowMillis: Int64) async throws -> Int

    /// How much room the store takes, for the broker's gauges.
    func usage() async throws -> StoreUsage

    /// Wakes tails when streams grow, and says when definitions change: at once for this
    /// process's appends, and, through the maintenance services, for what other processes
    /// sharing the store commit.
    var changes: ChangeFeed { get }

    /// The background work the store needs while a broker runs on it (for SQLite: checkpoints,
    /// and the poller that feeds `changes` with other processes' commits), as services that run
    /// until cancelled or graceful shutdown. Each call makes new ones.
    func maintenanceServices() -> [any Service]

    /// Whether the store can serve reads, for readiness (`GET /readyz`): returns when it can,
    /// throws (`store_unavailable` when its database cannot be reached) when it cannot. A store
    /// that is busy but answering is ready: readiness must not wait behind a storm of requests
    /// and take every broker out of service at once.
    func checkReadable() async throws
}
