import Foundation
import GRDB
import Synchronization
public import Logging
public import TocsinCore

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
        public init(
            path: String, synchronousFull: Bool = true, publishKeyWindow: Duration = .seconds(120), maxBytes: Int64? = nil,
            slowCommitThreshold: Duration = .seconds(1)
        ) {
            self.path = path
            self.synchronousFull = synchronousFull
            self.publishKeyWindow = publishKeyWindow
            self.maxBytes = maxBytes
            self.slowCommitThreshold = slowCommitThreshold
        }
    }

    /// How much of the database is in use (`usage()`).
    public struct Usage: Sendable, Equatable {
        /// Bytes of pages holding data (the file's size less its free pages).
        public var usedBytes: Int64
        /// The database file's size (its pages; the write-ahead log not counted).
        public var fileBytes: Int64
        /// The limit in force, if one is set: the configured one, rounded down to whole pages, or the
        /// database's size if it was larger when the store opened.
        public var maxBytes: Int64?
    }

    let pool: DatabasePool
    let path: String
    let publishKeyWindowMillis: Int64
    let maxBytes: Int64?
    let logger: Logger
    public let changes: ChangeFeed
    let committer: GroupCommitter
    /// Its own connection, so `PRAGMA data_version` sees every other connection's commits.
    private let watcher: DatabaseQueue
    private let lastDataVersion = Mutex<Int?>(nil)
    /// Stored definitions this store could not read and has logged (kind, name and text), so
    /// each is logged once however often it is read.
    private let reportedUnreadable = Mutex<Set<String>>([])

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
        self.maxBytes = limit
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
        // Last: it starts a thread, which only `deinit` (run once every property is set) stops.
        self.committer = GroupCommitter(
            pool: pool, publishKeyWindowMillis: window, maxBytes: limit, slowCommitThreshold: configuration.slowCommitThreshold, logger: logger
        ) { stream, epoch, events in feed.appended(stream: stream, epoch: epoch, events: events) }
        try refreshChanges()
    }

    /// Sets SQLite's `max_page_count` for `maxBytes` (at least one page) and returns the limit in
    /// force, in bytes: SQLite raises it to the database's size when the file is already larger.
    static func limitSize(_ db: Database, to maxBytes: Int64?) throws -> Int64? {
        guard let maxBytes else { return nil }
        let pageSize = try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
        let pages = try Int64.fetchOne(db, sql: "PRAGMA max_page_count = \(max(maxBytes / pageSize, 1))") ?? 0
        return pages * pageSize
    }

    /// How full the database is.
    public func usage() async throws -> Usage {
        try await pool.read { [maxBytes] db in try Self.usage(db, maxBytes: maxBytes) }
    }

    static func usage(_ db: Database, maxBytes: Int64?) throws -> Usage {
        let pageSize = try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
        let pages = try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0
        let free = try Int64.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
        return Usage(usedBytes: (pages - free) * pageSize, fileBytes: pages * pageSize, maxBytes: maxBytes)
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

    /// A fingerprint of the stream and channel definitions (and stream epochs): it changes when
    /// any process sharing the file defines, recreates or deletes one. The tables are small.
    public func catalogVersion() throws -> String {
        try pool.read { db in
            var text = ""
            for row in try Row.fetchAll(db, sql: "SELECT name, epoch, definition FROM streams ORDER BY name") {
                text += "s\u{1}" + (row["name"] as String) + "\u{1}" + (row["epoch"] as String) + "\u{1}" + (row["definition"] as String) + "\u{2}"
            }
            for row in try Row.fetchAll(db, sql: "SELECT name, definition FROM channels ORDER BY name") {
                text += "c\u{1}" + (row["name"] as String) + "\u{1}" + (row["definition"] as String) + "\u{2}"
            }
            return text
        }
    }

    /// Wakes the tails of streams that grew through other connections (other processes sharing
    /// the file). Cheap when nothing changed: one `PRAGMA data_version` on a connection of its
    /// own, which changes exactly when another connection commits. Returns whether it did.
    @discardableResult
    public func refreshChanges() throws -> Bool {
        let version = try watcher.inDatabase { db in try Int.fetchOne(db.cachedStatement(sql: "PRAGMA data_version")) ?? 0 }
        guard lastDataVersion.withLock({ $0 }) != version else { return false }
        let rows = try pool.read { db in try Row.fetchAll(db, sql: "SELECT name, epoch, last_seq FROM streams") }
        for row in rows {
            changes.advance(stream: row["name"], epoch: row["epoch"], to: row["last_seq"])
        }
        // Only now: if the read failed, the next poll tries again.
        lastDataVersion.withLock { $0 = version }
        return true
    }

    /// Checkpoints the write-ahead log every `interval` on a connection of its own, until
    /// cancelled; meanwhile commits do not checkpoint.
    ///
    /// SQLite otherwise checkpoints inside the commit that fills the log past 1,000 pages:
    /// that commit (and every publish queued behind it) waits while ~4 MB are copied into the
    /// database file — a stall of ~10 ms every few hundred commits, the whole p99 of delivery
    /// latency. Here a PASSIVE checkpoint copies what was committed since the last one, beside
    /// the writer. The log only starts over when a checkpoint finished with nothing newer
    /// committed, which a steady stream of commits rarely allows, so once the log passes
    /// `restartPages` (copied already but for the last few pages) a RESTART checkpoint holds
    /// writers back for the moment it takes to copy those and start the log over.
    /// Several processes sharing the file may each run this; one that finds another
    /// checkpointing skips a turn.
    public func runCheckpoints(every interval: Duration, restartPages: Int = 2000) async {
        do {
            var config = GRDB.Configuration()
            // A RESTART holds new writers back while it waits for readers: never long.
            config.busyMode = .timeout(0.05)
            config.label = "tocsin-checkpointer"
            let connection = try DatabaseQueue(path: path, configuration: config)
            try await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
            // A failure that repeats (a full disk: copying the log into the file needs room) is
            // logged once a minute, not four times a second.
            var failures = LogThrottle()
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                do {
                    try await connection.writeWithoutTransaction { db in
                        let (pages, _) = try db.checkpoint(.passive)
                        if pages >= restartPages { _ = try db.checkpoint(.restart) }
                    }
                } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
                    continue
                } catch is CancellationError {
                    break
                } catch {
                    if let count = failures.occurred() {
                        logger.warning("checkpoint failed", metadata: ["error": "\(error)", "failures": "\(count)"])
                    }
                }
            }
        } catch {
            logger.error("background checkpoints unavailable; commits will checkpoint", metadata: ["error": "\(error)"])
        }
        // Back to SQLite's default, for whoever writes after this stops. In a task of its own:
        // GRDB refuses to start work in a cancelled task, and cancelling is how this stops.
        await Task { [pool] in
            try? await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 1000") }
        }.value
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE streams (
                        name TEXT PRIMARY KEY,
                        definition TEXT NOT NULL,
                        epoch TEXT NOT NULL,
                        last_seq INTEGER NOT NULL DEFAULT 0,
                        first_seq INTEGER NOT NULL DEFAULT 1,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE events (
                        stream TEXT NOT NULL,
                        seq INTEGER NOT NULL,
                        published_at INTEGER NOT NULL,
                        body TEXT NOT NULL,
                        PRIMARY KEY (stream, seq)
                    ) WITHOUT ROWID;
                    CREATE TABLE channels (
                        name TEXT PRIMARY KEY,
                        stream TEXT NOT NULL,
                        definition TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE subscriptions (
                        id TEXT PRIMARY KEY,
                        client TEXT NOT NULL,
                        channel TEXT NOT NULL,
                        params TEXT NOT NULL,
                        epoch TEXT NOT NULL,
                        acked_seq INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        UNIQUE (client, channel, params)
                    );
                    CREATE INDEX subscriptions_by_channel ON subscriptions (channel);
                    """)
        }
        m.registerMigration("v2: publish keys") { db in
            try db.execute(
                sql: """
                    CREATE TABLE publish_keys (
                        stream TEXT NOT NULL,
                        key TEXT NOT NULL,
                        epoch TEXT NOT NULL,
                        first_seq INTEGER NOT NULL,
                        count INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (stream, key)
                    ) WITHOUT ROWID;
                    CREATE INDEX publish_keys_by_age ON publish_keys (created_at);
                    """)
        }
        return m
    }

    // MARK: Streams

    public func putStream(_ definition: StreamDefinition, recreate: Bool) async throws -> (StreamInfo, PutOutcome) {
        let text = try Self.encode(definition)
        let result: (StreamInfo, PutOutcome) = try await write { db in
            let now = TimeFormat.nowMillis()
            let existing = try Self.fetchStream(db, name: definition.name, unreadable: self.reportUnreadable)
            if existing == nil, try Bool.fetchOne(db, sql: "SELECT 1 FROM streams WHERE name = ?", arguments: [definition.name]) == true {
                // Stored with a definition that cannot be read: only a recreate replaces it.
                guard recreate else {
                    throw TocsinError(
                        .conflict,
                        "stream '\(definition.name)' exists with a stored definition this broker cannot read; PUT with ?recreate=true drops its events and starts a new epoch")
                }
                try db.execute(sql: "DELETE FROM streams WHERE name = ?", arguments: [definition.name])
                try Self.deleteHistory(db, stream: definition.name)
            }
            if let existing {
                if existing.definition.schema == definition.schema && !recreate {
                    if existing.definition.retention == definition.retention { return (existing, .unchanged) }
                    try db.execute(sql: "UPDATE streams SET definition = ? WHERE name = ?", arguments: [text, definition.name])
                    var updated = existing
                    updated.definition = definition
                    return (updated, .updated)
                }
                guard recreate else {
                    throw TocsinError(
                        .conflict,
                        "stream '\(definition.name)' exists with different fields; PUT with ?recreate=true drops its events and starts a new epoch")
                }
                try Self.deleteHistory(db, stream: definition.name)
                let epoch = Self.newEpoch()
                try db.execute(
                    sql: "UPDATE streams SET definition = ?, epoch = ?, last_seq = 0, first_seq = 1, created_at = ? WHERE name = ?",
                    arguments: [text, epoch, now, definition.name])
                return (StreamInfo(definition: definition, epoch: epoch, lastSeq: 0, firstSeq: 1, createdAtMillis: now), .recreated)
            }
            let epoch = Self.newEpoch()
            try db.execute(
                sql: "INSERT INTO streams (name, definition, epoch, last_seq, first_seq, created_at) VALUES (?, ?, ?, 0, 1, ?)",
                arguments: [definition.name, text, epoch, now])
            return (StreamInfo(definition: definition, epoch: epoch, lastSeq: 0, firstSeq: 1, createdAtMillis: now), .created)
        }
        if result.1 == .recreated || result.1 == .created { changes.advance(stream: definition.name, epoch: result.0.epoch, to: 0) }
        return result
    }

    /// Streams whose stored definition cannot be read (stored by another version, or damaged)
    /// are left out, each logged once: one bad definition never stops the rest from serving.
    public func streams() async throws -> [StreamInfo] {
        try await pool.read { db in try Self.fetchStreams(db, unreadable: self.reportUnreadable) }
    }

    public func stream(named name: String) async throws -> StreamInfo? {
        try await pool.read { db in try Self.fetchStream(db, name: name, unreadable: self.reportUnreadable) }
    }

    /// What a read does with a stored definition it cannot decode: (kind, name, text, error).
    typealias UnreadableDefinition = @Sendable (String, String, String, any Error) -> Void

    static func fetchStreams(_ db: Database, unreadable: UnreadableDefinition? = nil) throws -> [StreamInfo] {
        try Row.fetchAll(db, sql: "SELECT * FROM streams ORDER BY name").compactMap { try readableStream($0, unreadable) }
    }

    static func fetchStream(_ db: Database, name: String, unreadable: UnreadableDefinition? = nil) throws -> StreamInfo? {
        try Row.fetchOne(db, cachedSQL: "SELECT * FROM streams WHERE name = ?", arguments: [name]).flatMap { try readableStream($0, unreadable) }
    }

    /// The stream of a row, or nil (reported) when its definition cannot be read. Without a
    /// handler the decoding error is thrown.
    private static func readableStream(_ row: Row, _ unreadable: UnreadableDefinition?) throws -> StreamInfo? {
        guard let unreadable else { return try streamInfo(row) }
        do {
            return try streamInfo(row)
        } catch {
            unreadable("stream", row["name"], row["definition"], error)
            return nil
        }
    }

    /// Logs a stored definition that cannot be read, once per name and text.
    func reportUnreadable(kind: String, name: String, text: String, error: any Error) {
        guard reportedUnreadable.withLock({ $0.insert("\(kind)\u{0}\(name)\u{0}\(text)").inserted }) else { return }
        logger.error(
            "a stored \(kind) definition cannot be read; it is skipped (redefine or delete it), everything else serves",
            metadata: [kind: "\(name)", "definition": "\(text.prefix(500))", "error": "\(error)"])
    }

    static func streamInfo(_ row: Row) throws -> StreamInfo {
        let text: String = row["definition"]
        return StreamInfo(
            definition: try JSONDecoder().decode(StreamDefinition.self, from: Data(text.utf8)),
            epoch: row["epoch"], lastSeq: row["last_seq"], firstSeq: row["first_seq"], createdAtMillis: row["created_at"])
    }

    // MARK: Events

    public func append(stream: String, events: [String], key: String?) async throws -> Appended {
        try await committer.append(stream: stream, events: events, key: key)
    }

    public func append(stream: String, events: [String], key: String?, completion: @escaping @Sendable (Result<Appended, any Error>) -> Void) {
        committer.append(stream: stream, events: events, key: key, completion: completion)
    }

    public func readEvents(stream: String, after: Int64, limit: Int) async throws -> [StoredEvent] {
        try await pool.read { db in
            try Row.fetchAll(
                db, cachedSQL: "SELECT seq, published_at, body FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                arguments: [stream, after, limit]
            ).map { row in StoredEvent(seq: row[0], publishedAtMillis: row[1], json: row[2]) }
        }
    }

    // MARK: Channels

    public func putChannel(_ definition: ChannelDefinition) async throws -> PutOutcome {
        let text = definition.json.serialized
        return try await write { db in
            let existing = try String.fetchOne(db, sql: "SELECT definition FROM channels WHERE name = ?", arguments: [definition.name])
            if existing == text { return .unchanged }
            if existing != nil {
                let used = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM subscriptions WHERE channel = ?", arguments: [definition.name]) ?? 0
                if used > 0 {
                    throw TocsinError(
                        .conflict,
                        "channel '\(definition.name)' has \(used) subscription(s); its definition cannot change under them. Define a new channel, or delete this one (which drops its subscriptions)")
                }
            }
            try db.execute(
                sql: """
                    INSERT INTO channels (name, stream, definition, created_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET stream = excluded.stream, definition = excluded.definition
                    """,
                arguments: [definition.name, definition.stream, text, TimeFormat.nowMillis()])
            return existing == nil ? .created : .updated
        }
    }

    /// Channels whose stored definition cannot be read (stored under older rules, or damaged)
    /// are left out, each logged once.
    public func channels() async throws -> [ChannelDefinition] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT name, definition FROM channels ORDER BY name").compactMap { row in
                let name: String = row["name"]
                let text: String = row["definition"]
                do {
                    return try ChannelDefinition(name: name, json: try JSONValue.parse(text))
                } catch {
                    self.reportUnreadable(kind: "channel", name: name, text: text, error: error)
                    return nil
                }
            }
        }
    }

    public func deleteChannel(named name: String) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM subscriptions WHERE channel = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM channels WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    // MARK: Subscriptions

    public func openSubscription(
        client: String, channel: String, params: [String: JSONValue], initial: StreamPosition, maxPerClient: Int?
    ) async throws -> (SubscriptionRecord, created: Bool) {
        let paramsText = JSONValue.object(params).serialized
        // Resuming (the common case: every reconnect) only reads; the write lock, which brokers
        // sharing the file contend for, is taken only to create.
        let existing = try await pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM subscriptions WHERE client = ? AND channel = ? AND params = ?",
                arguments: [client, channel, paramsText]
            ).map(Self.subscription)
        }
        if let existing { return (existing, false) }
        return try await write { db in
            if let row = try Row.fetchOne(
                db, sql: "SELECT * FROM subscriptions WHERE client = ? AND channel = ? AND params = ?",
                arguments: [client, channel, paramsText])
            {
                return (try Self.subscription(row), false)
            }
            if let maxPerClient {
                // Only when creating (resuming is the common case), through the (client, …) index.
                let held = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM subscriptions WHERE client = ?", arguments: [client]) ?? 0
                if held >= maxPerClient {
                    throw TocsinError(
                        .tooManySubscriptions,
                        "client '\(client)' already has \(held) subscriptions, the most a client may have (\(maxPerClient)); unsubscribe from some first")
                }
            }
            let id = Self.newSubscriptionID()
            try db.execute(
                sql: "INSERT INTO subscriptions (id, client, channel, params, epoch, acked_seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [id, client, channel, paramsText, initial.epoch, initial.seq, TimeFormat.nowMillis()])
            return (
                SubscriptionRecord(id: id, client: client, channel: channel, params: params, epoch: initial.epoch, ackedSeq: initial.seq),
                true
            )
        }
    }

    public func subscriptions(client: String) async throws -> [SubscriptionRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM subscriptions WHERE client = ? ORDER BY created_at, id", arguments: [client])
                .map(Self.subscription)
        }
    }

    public func subscription(id: String) async throws -> SubscriptionRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM subscriptions WHERE id = ?", arguments: [id]).map(Self.subscription)
        }
    }

    public func deleteSubscription(id: String) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM subscriptions WHERE id = ?", arguments: [id])
            return db.changesCount > 0
        }
    }

    public func saveAcks(_ acks: [String: StreamPosition]) async throws {
        guard !acks.isEmpty else { return }
        try await write { db in
            // A new epoch always replaces the old one; within an epoch the cursor only moves forward.
            let statement = try db.cachedStatement(
                sql: "UPDATE subscriptions SET epoch = ?, acked_seq = ? WHERE id = ? AND (epoch <> ? OR acked_seq < ?)")
            for (id, position) in acks {
                try statement.execute(arguments: [position.epoch, position.seq, id, position.epoch, position.seq])
            }
        }
    }

    static func subscription(_ row: Row) throws -> SubscriptionRecord {
        let paramsText: String = row["params"]
        return SubscriptionRecord(
            id: row["id"], client: row["client"], channel: row["channel"],
            params: try JSONValue.parse(paramsText).objectValue ?? [:], epoch: row["epoch"], ackedSeq: row["acked_seq"])
    }

    // MARK: Retention

    public func enforceRetention(nowMillis: Int64) async throws -> Int {
        let keysBefore = nowMillis - publishKeyWindowMillis
        return try await write { db in
            var deleted = 0
            for info in try Self.fetchStreams(db, unreadable: self.reportUnreadable) {
                let retention = info.definition.retention
                // Bounded when defined (`Retention.maxAgeSecondsLimit`); guarded all the same for
                // definitions stored under older rules: an age beyond the clock's reach deletes nothing.
                if let maxAge = retention.maxAgeSeconds, maxAge > 0 {
                    let (ageMillis, tooLong) = maxAge.multipliedReportingOverflow(by: 1000)
                    let (before, beforeAll) = nowMillis.subtractingReportingOverflow(ageMillis)
                    if !tooLong && !beforeAll {
                        try db.execute(
                            sql: "DELETE FROM events WHERE stream = ? AND published_at < ?", arguments: [info.name, before])
                        deleted += db.changesCount
                    }
                }
                if let maxEvents = retention.maxEvents, maxEvents > 0 {
                    try db.execute(
                        sql: "DELETE FROM events WHERE stream = ? AND seq <= ?", arguments: [info.name, info.lastSeq - maxEvents])
                    deleted += db.changesCount
                }
                let first = try Int64.fetchOne(db, sql: "SELECT MIN(seq) FROM events WHERE stream = ?", arguments: [info.name])
                try db.execute(
                    sql: "UPDATE streams SET first_seq = ? WHERE name = ?", arguments: [first ?? info.lastSeq + 1, info.name])
            }
            try db.execute(sql: "DELETE FROM publish_keys WHERE created_at < ?", arguments: [keysBefore])
            return deleted
        }
    }

    // MARK: Helpers

    /// An IMMEDIATE transaction, so that writers in other processes wait instead of failing.
    /// A write that finds the store full throws `store_full` (and, like any failure, stores nothing).
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_FULL {
            throw TocsinError.storeFull(maxBytes: maxBytes)
        }
    }

    static func encode(_ definition: StreamDefinition) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(definition), as: UTF8.self)
    }

    /// Deletes a stream's events and publish keys (a recreate starts it over).
    static func deleteHistory(_ db: Database, stream: String) throws {
        try db.execute(sql: "DELETE FROM events WHERE stream = ?", arguments: [stream])
        try db.execute(sql: "DELETE FROM publish_keys WHERE stream = ?", arguments: [stream])
    }

    static func newEpoch() -> String {
        let millis = String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
        return "\(millis)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    }

    static func newSubscriptionID() -> String {
        "s_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
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
