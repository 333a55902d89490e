import Foundation
import GRDB
import Synchronization
public import Logging
import TocsinCore

/// The embedded store: one SQLite file in WAL mode. Several processes on one host may share it
/// (each broker of `tocsin dev`); every write is an IMMEDIATE transaction, so they serialize.
public final class SQLiteStore: Store {
    public struct Configuration: Sendable {
        /// The database file; its directory is created if missing.
        public var path: String
        /// `FULL` makes every group commit survive power loss; `NORMAL` survives process crashes only.
        public var synchronousFull: Bool = true
        /// How long a publish key is remembered (`PublishKey`).
        public var publishKeyWindow: Duration = .seconds(120)
        /// The most bytes the database may hold (SQLite's `max_page_count`); nil for no limit but
        /// the disk's. A write that needs more fails with `store_full` and stores nothing; pages
        /// retention frees are reused. The write-ahead log comes on top of this (a few MiB).
        public var maxBytes: Int64? = nil
        /// A commit that takes longer is logged and counted (`tocsin_store_slow_commits_total`).
        public var slowCommitThreshold: Duration = .seconds(1)
        /// How often to look for commits by other processes sharing the file (`tocsin broker`:
        /// `--poll-ms`); nil when none do. Its maintenance then includes the poller.
        public var pollInterval: Duration? = nil
        /// How often the write-ahead log is checkpointed, beside the writer rather than inside a
        /// commit (`runCheckpoints`).
        public var checkpointInterval: Duration = .milliseconds(250)
        /// The wall clock that stamps events, definitions and subscriptions, and times publish keys.
        public var nowMillis: @Sendable () -> Int64 = WallClock.nowMillis

        public init(
            path: String, synchronousFull: Bool = true, publishKeyWindow: Duration = .seconds(120), maxBytes: Int64? = nil,
            slowCommitThreshold: Duration = .seconds(1), pollInterval: Duration? = nil, checkpointInterval: Duration = .milliseconds(250)
        ) {
            self.path = path
            self.synchronousFull = synchronousFull
            self.publishKeyWindow = publishKeyWindow
            self.maxBytes = maxBytes
            self.slowCommitThreshold = slowCommitThreshold
            self.pollInterval = pollInterval
            self.checkpointInterval = checkpointInterval
        }
    }

    let pool: DatabasePool
    let path: String
    let publishKeyWindowMillis: Int64
    /// The size limit in force (`limitSize`).
    let maxBytes: Int64?
    let pollInterval: Duration?
    let checkpointInterval: Duration
    let logger: Logger
    /// The wall clock (`Configuration.nowMillis`).
    let nowMillis: @Sendable () -> Int64
    public let changes: ChangeFeed
    let committer: GroupCommitter
    /// Writes many clients make at once (new durable subscriptions), committed together.
    let batcher: WriteBatcher
    /// Its own connection, so `PRAGMA data_version` sees every other connection's commits.
    let watcher: DatabaseQueue
    let lastDataVersion = Mutex<Int?>(nil)
    /// Stored definitions this store could not read and has logged (kind, name and text), so
    /// each is logged once however often it is read.
    let reportedUnreadable = Mutex<Set<String>>([])

    public init(configuration: Configuration, logger: Logger = Logger(label: "tocsin.store")) throws {
        let directory = URL(fileURLWithPath: configuration.path).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = GRDB.Configuration()
        config.busyMode = .timeout(10)
        let synchronous = configuration.synchronousFull ? "FULL" : "NORMAL"
        config.label = "tocsin"
        let pool = try Self.retryingWhileAnotherProcessSetsUp { try DatabasePool(path: configuration.path, configuration: config) }
        // On the writer (the only connection that commits), once the pool is open: GRDB sets
        // synchronous = NORMAL when it switches the writer to WAL — after `prepareDatabase` —
        // and under NORMAL a commit is not synced before it returns. Read back, so that a
        // library that resets it again fails the start instead of silently acknowledging
        // publishes before they are on disk.
        let level = try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
            return try Int.fetchOne(db, sql: "PRAGMA synchronous")
        }
        guard level == (configuration.synchronousFull ? 2 : 1) else {
            throw TocsinError(.internalError, "SQLite kept synchronous = \(level.map(String.init) ?? "?") on the writer; wanted \(synchronous)")
        }
        try Self.retryingWhileAnotherProcessSetsUp { [pool] in try Self.migrator.migrate(pool) }
        // The size limit on the writer only (the only connection that grows the file; the limit
        // is not stored in the file), and only now: opening the pool (GRDB creates and drops a
        // table to switch to WAL) and migrating need room a store that filled up has not got.
        let (limit, used) = try pool.writeWithoutTransaction { db in
            (try Self.limitSize(db, to: configuration.maxBytes), try Self.usage(db, maxBytes: nil).usedBytes)
        }
        if let wanted = configuration.maxBytes, used > wanted {
            logger.warning(
                "the store is already larger than its size limit: it may not grow, and publishes are refused with store_full until retention frees space",
                metadata: ["limitBytes": "\(wanted)", "databaseBytes": "\(used)"])
        }
        self.pool = pool
        self.path = configuration.path
        self.nowMillis = configuration.nowMillis
        self.maxBytes = limit
        self.pollInterval = configuration.pollInterval
        self.checkpointInterval = configuration.checkpointInterval
        // Clamped: a negative window would turn keys off, a huge one overflow.
        let window = min(max(configuration.publishKeyWindow, .zero), .seconds(100 * 365 * 86_400)).milliseconds
        self.publishKeyWindowMillis = window
        self.logger = logger
        let feed = ChangeFeed()
        self.changes = feed
        var watcherConfig = GRDB.Configuration()
        watcherConfig.readonly = true
        watcherConfig.busyMode = .timeout(10)
        watcherConfig.label = "tocsin-watcher"
        self.watcher = try DatabaseQueue(path: configuration.path, configuration: watcherConfig)
        self.batcher = WriteBatcher(pool: pool)
        // Last: it starts a thread, which only `deinit` (run once every property is set) stops.
        self.committer = GroupCommitter(
            pool: pool, publishKeyWindowMillis: window, maxBytes: limit, slowCommitThreshold: configuration.slowCommitThreshold,
            nowMillis: configuration.nowMillis, logger: logger
        ) { stream, epoch, events in feed.appended(stream: stream, epoch: epoch, events: events) }
        try refreshChanges()
    }

    /// Group commits made so far (each one transaction and, with synced commits, one sync).
    public var commitCount: Int { committer.commits.load(ordering: .relaxed) }
    /// Those that took longer than `Configuration.slowCommitThreshold`.
    public var slowCommitCount: Int { committer.slowCommits.load(ordering: .relaxed) }

    /// Ends the commit thread once what is queued is committed.
    deinit {
        committer.stop()
    }

    /// Several brokers may open a fresh store at once. Switching the file to WAL takes a lock
    /// SQLite's busy timeout does not cover, and two processes may both start the first
    /// migration (the loser fails on an existing table, then finds it applied): retry those for
    /// a few seconds.
    static func retryingWhileAnotherProcessSetsUp<T>(_ body: () throws -> T) throws -> T {
        var attempt = 0
        while true {
            do {
                return try body()
            } catch let error as DatabaseError where attempt < 100 {
                let busy = error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
                let raced = error.resultCode == .SQLITE_ERROR && (error.message ?? "").contains("already exists")
                guard busy || raced else { throw error }
                attempt += 1
                usleep(50_000)
            }
        }
    }

    // MARK: Helpers

    /// An IMMEDIATE transaction, so that writers in other processes wait instead of failing.
    /// A write that finds the store full throws `store_full` (and, like any failure, stores nothing).
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await reportingFull {
            try await pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        }
    }

    /// `write`, in one transaction with the other writes queued meanwhile (`WriteBatcher`): for
    /// small writes that many clients make at once.
    func batchedWrite<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await reportingFull { try await batcher.write(body) }
    }

    private func reportingFull<T: Sendable>(_ write: () async throws -> T) async throws -> T {
        do {
            return try await write()
        } catch let error as DatabaseError where error.resultCode == .SQLITE_FULL {
            throw TocsinError.storeFull(maxBytes: maxBytes)
        }
    }
}

extension Row {
    static func fetchOne(_ db: Database, cachedSQL sql: String, arguments: StatementArguments) throws -> Row? {
        try Row.fetchOne(try db.cachedStatement(sql: sql), arguments: arguments)
    }

    static func fetchAll(_ db: Database, cachedSQL sql: String, arguments: StatementArguments) throws -> [Row] {
        try Row.fetchAll(try db.cachedStatement(sql: sql), arguments: arguments)
    }
}

extension TocsinError {
    /// SQLite's `SQLITE_FULL`: the database reached `maxBytes` (`max_page_count`), or its disk is full.
    static func storeFull(maxBytes: Int64?) -> TocsinError {
        let what = maxBytes.map { "it reached its size limit of \($0) bytes (--max-store-size), or its disk is full" } ?? "its disk is full"
        return TocsinError(
            .storeFull, "the store is full: \(what). Nothing of this request was stored; it succeeds once retention or an operator frees space")
    }
}
