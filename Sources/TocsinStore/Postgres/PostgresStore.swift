import Foundation
public import Logging
import Metrics
import PostgresNIO
import Synchronization
import TocsinCore

/// A store in PostgreSQL, which any number of brokers on any number of hosts share. It keeps the
/// guarantees of the embedded store (the conformance suite checks both):
/// - **Gapless seqs in commit order.** An append locks its streams' rows (`SELECT … FOR UPDATE`,
///   in name order, so two brokers never deadlock) and numbers its events from `last_seq`: the
///   next append to a stream waits for the commit, so no reader ever sees seq n+1 before seq n.
/// - **Group commit** (`PostgresCommitter`): appends queued while one transaction commits go
///   into the next, all-or-nothing each.
/// - Publish keys, durable subscriptions, acks, retention and `whenFull` as in SQLite. The size
///   limit counts the bytes of stored event bodies (`streams.bytes`), not PostgreSQL's pages.
///
/// Other processes' commits reach `changes` through LISTEN/NOTIFY, used only as a wake-up, and
/// a poll of the `streams` table every `pollInterval`: the tables are the truth, and a lost
/// notification delays nothing by more than one poll (`PostgresStore+Changes`).
///
/// When the database cannot be reached, every operation fails within `operationTimeout` with
/// `store_unavailable` (retryable; nothing is acknowledged that was not committed), and the
/// store reconnects on its own. With several hosts it finds the one that accepts writes.
public final class PostgresStore: Store {
    public struct Configuration: Sendable {
        public var location: PostgresLocation
        /// How long a publish key is remembered (`PublishKey`).
        public var publishKeyWindow: Duration = .seconds(120)
        /// The most bytes of event bodies the store may hold; nil for no limit.
        public var maxBytes: Int64? = nil
        /// How often the `streams` table is read for other processes' commits, beside LISTEN.
        public var pollInterval: Duration = .milliseconds(500)
        /// A commit that takes longer is logged and counted.
        public var slowCommitThreshold: Duration = .seconds(1)
        /// The wall clock that stamps events, definitions and subscriptions, and times publish keys.
        public var nowMillis: @Sendable () -> Int64 = WallClock.nowMillis

        public init(location: PostgresLocation, publishKeyWindow: Duration = .seconds(120), maxBytes: Int64? = nil) {
            self.location = location
            self.publishKeyWindow = publishKeyWindow
            self.maxBytes = maxBytes
        }
    }

    let connections: PostgresConnections
    /// The catalog version the follower last saw (at first, the one when the store opened):
    /// when the stored one differs, definitions changed.
    let catalogVersion: Mutex<Int64>
    let logger: Logger
    let nowMillis: @Sendable () -> Int64
    let publishKeyWindowMillis: Int64
    let maxBytes: Int64?
    let pollInterval: Duration
    let committer: PostgresCommitter
    /// New durable subscriptions that wait share a transaction (`openSubscriptions`).
    let creations: Batcher<SubscriptionCreations.Request, (SubscriptionRecord, Bool)>
    public let changes: ChangeFeed
    /// Stored definitions this store could not read and has logged, so each is logged once.
    let reportedUnreadable = Mutex<Set<String>>([])
    /// Times the follower found a stream behind what this process saw committed
    /// (`reportLostCommits`), and the positions it logged.
    let lostCommits = Atomic<Int>(0)
    let lostCommitsMetric = Counter(label: "tocsin_store_lost_commits_total")
    let reportedLost = Mutex<Set<String>>([])

    /// Connects, runs the migrations this version needs (one process at a time), and returns
    /// the store. Fails with `store_unavailable` when no server is reachable in time.
    public static func open(_ configuration: Configuration, logger: Logger = Logger(label: "tocsin.store")) async throws -> PostgresStore {
        let connections = PostgresConnections(location: configuration.location, logger: logger)
        let catalogVersion: Int64
        do {
            try await connections.run { connection in try await Self.migrate(connection, logger: logger) }
            catalogVersion = try await connections.run { connection in try await Self.catalogVersion(connection, logger: logger) }
        } catch {
            connections.close()
            throw error
        }
        return PostgresStore(configuration: configuration, connections: connections, catalogVersion: catalogVersion, logger: logger)
    }

    private init(configuration: Configuration, connections: PostgresConnections, catalogVersion: Int64, logger: Logger) {
        self.catalogVersion = Mutex(catalogVersion)
        self.connections = connections
        self.logger = logger
        self.nowMillis = configuration.nowMillis
        let window = min(max(configuration.publishKeyWindow, .zero), .seconds(100 * 365 * 86_400)).milliseconds
        self.publishKeyWindowMillis = window
        self.maxBytes = configuration.maxBytes.map { max($0, 1) }
        self.pollInterval = configuration.pollInterval
        let feed = ChangeFeed()
        self.changes = feed
        self.committer = PostgresCommitter(
            connections: connections, publishKeyWindowMillis: window, maxBytes: self.maxBytes,
            slowCommitThreshold: configuration.slowCommitThreshold, nowMillis: configuration.nowMillis, logger: logger
        ) { stream, epoch, events in feed.appended(stream: stream, epoch: epoch, events: events) }
        self.creations = Batcher(maxBatch: Self.maxSubscriptionsPerTransaction) { [nowMillis = configuration.nowMillis] batch in
            await Self.openSubscriptions(batch, connections: connections, nowMillis: nowMillis, logger: logger)
        }
    }

    /// Ready when a read succeeds, or at once when every connection is busy and the database
    /// answered one of them within the timeout (a storm: not a reason to leave service).
    public func checkReadable() async throws {
        if connections.busyButAnswering { return }
        _ = try await streams()
    }

    /// Most new subscriptions in one transaction, to bound how long one holds its clients' locks.
    static let maxSubscriptionsPerTransaction = 1_000

    /// Commits what is queued, then closes the connections.
    deinit {
        let committer = committer
        let connections = connections
        Task {
            await committer.stop()
            connections.close()
        }
    }

    /// A transaction on a pooled connection, within the operation timeout; failures become
    /// `TocsinError`s (`store_unavailable` when the database cannot be reached).
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await connections.run { connection in try await Self.inTransaction(connection, logger: self.logger, body) }
    }

    /// Reads (or writes a single statement) on a pooled connection, within the operation timeout.
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await connections.run(body)
    }

    static func inTransaction<T>(_ connection: PostgresConnection, logger: Logger, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await connection.query("BEGIN", logger: logger)
        do {
            let value = try await body(connection)
            try await connection.query("COMMIT", logger: logger)
            return value
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }

    static func catalogVersion(_ connection: PostgresConnection, logger: Logger) async throws -> Int64 {
        for try await version in try await connection.query("SELECT catalog_version FROM tocsin_meta", logger: logger).decode(Int64.self) {
            return version
        }
        return 0
    }

    /// Tells every broker on this database that definitions changed (delivered at commit).
    static func notifyDefinitionsChanged(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("UPDATE tocsin_meta SET catalog_version = catalog_version + 1", logger: logger)
        try await connection.query("SELECT pg_notify('tocsin_changes', 'catalog')", logger: logger)
    }

    /// Logs a stored definition that cannot be read, once per name and text.
    func reportUnreadable(kind: String, name: String, text: String, error: any Error) {
        guard reportedUnreadable.withLock({ $0.insert("\(kind)\u{0}\(name)\u{0}\(text)").inserted }) else { return }
        logger.error(
            "a stored \(kind) definition cannot be read; it is skipped (redefine or delete it), everything else serves",
            metadata: [kind: "\(name)", "definition": "\(text.prefix(500))", "error": "\(error)"])
    }
}

/// An error the store's own code throws inside an operation to signal itself (a retry, a
/// refusal it settles later): `fromPostgres` leaves it as it is.
protocol PassesThroughStore: Error {}

extension TocsinError {
    static func storeUnavailable(_ detail: String) -> TocsinError {
        TocsinError(
            .storeUnavailable,
            "the store's database cannot be reached (\(detail)); nothing of this request is known to be stored. Retry shortly, with the same publish key")
    }

    /// An operation that waited out the timeout for a connection while every connection of the
    /// pool was lent to others: a storm of requests, or a database answering slowly. Retryable,
    /// as `store_unavailable`, with a message that does not send an operator to a database that
    /// is up.
    static func storeBusy(poolSize: Int, timeout: Duration) -> TocsinError {
        TocsinError(
            .storeUnavailable,
            "the store is busy: all of this broker's \(poolSize) connections to its database were in use by other requests for \(timeout) "
                + "(more requests at once than the pool serves in that time, or a database answering slowly; the pool's size is the store URL's "
                + "pool option); nothing of this request is known to be stored. Retry shortly, with the same publish key")
    }

    /// A PostgreSQL failure as a user sees it: the database out of reach (connection lost,
    /// server shutting down or starting, a standby that refuses writes) is `store_unavailable`;
    /// a full disk is `store_full`; anything else is `internal`, with the server's message.
    static func fromPostgres(_ error: any Error) -> any Error {
        switch error {
        case is PassesThroughStore: return error
        case let error as TocsinError: return error
        case let error as PostgresTransactionError:
            let cause = error.closureError ?? error.commitError ?? error.beginError ?? error.rollbackError
            return cause.map(fromPostgres) ?? TocsinError.storeUnavailable("\(error)")
        case let error as PSQLError:
            guard error.code == .server, let state = error.serverInfo?[.sqlState] else {
                return TocsinError.storeUnavailable("\(error.code)")
            }
            let message = error.serverInfo?[.message] ?? ""
            if state.hasPrefix("08") || ["57P01", "57P02", "57P03", "25006", "40001", "40P01", "53300"].contains(state) {
                return TocsinError.storeUnavailable("\(state): \(message)")
            }
            if state == "53100" {
                return TocsinError(.storeFull, "the store is full: its database's disk is full (\(message)). Nothing of this request was stored")
            }
            return TocsinError(.internalError, "the database refused an operation: \(state): \(message)")
        case is CancellationError:
            return TocsinError.storeUnavailable("the operation was cancelled")
        default:
            return TocsinError.storeUnavailable("\(error)")
        }
    }
}
