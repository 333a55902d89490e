import Foundation
import GRDB
public import ServiceLifecycle
import Synchronization
import TocsinCore

/// Size limit and usage, following other processes' commits, and checkpoints.
extension SQLiteStore {
    /// Checkpoints (`runCheckpoints`) and, with a poll interval, the poller that follows other
    /// processes' commits and definitions (`runPoller`).
    public func maintenanceServices() -> [any Service] {
        var services: [any Service] = [StoreTask("sqlite checkpoints") { [self] in await runCheckpoints(every: checkpointInterval) }]
        if let pollInterval {
            services.append(StoreTask("sqlite poller") { [self] in await runPoller(every: pollInterval) })
        }
        return services
    }

    /// Sets SQLite's `max_page_count` for `maxBytes` (at least one page) and returns the limit in
    /// force, in bytes: SQLite raises it to the database's size when the file is already larger.
    static func limitSize(_ db: Database, to maxBytes: Int64?) throws -> Int64? {
        guard let maxBytes else { return nil }
        let pageSize = try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
        let pages = try Int64.fetchOne(db, sql: "PRAGMA max_page_count = \(max(maxBytes / pageSize, 1))") ?? 0
        return pages * pageSize
    }

    /// How full the database is: its pages holding data, all its pages (the write-ahead log not
    /// counted), and the limit in force (the configured one, rounded down to whole pages, or the
    /// database's size if it was larger when the store opened).
    public func usage() async throws -> StoreUsage {
        try await pool.read { [maxBytes] db in try Self.usage(db, maxBytes: maxBytes) }
    }

    static func usage(_ db: Database, maxBytes: Int64?) throws -> StoreUsage {
        let pageSize = try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
        let pages = try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0
        let free = try Int64.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
        return StoreUsage(usedBytes: (pages - free) * pageSize, allocatedBytes: pages * pageSize, maxBytes: maxBytes)
    }

    /// A fingerprint of the stream, channel and dataset definitions (and stream epochs): it changes when
    /// any process sharing the file defines, recreates or deletes one. The tables are small.
    func catalogVersion() throws -> String {
        try pool.read { db in
            var text = ""
            for row in try Row.fetchAll(db, sql: "SELECT name, epoch, definition FROM streams ORDER BY name") {
                text += "s\u{1}" + (row["name"] as String) + "\u{1}" + (row["epoch"] as String) + "\u{1}" + (row["definition"] as String) + "\u{2}"
            }
            for row in try Row.fetchAll(db, sql: "SELECT name, definition FROM channels ORDER BY name") {
                text += "c\u{1}" + (row["name"] as String) + "\u{1}" + (row["definition"] as String) + "\u{2}"
            }
            for row in try Row.fetchAll(db, sql: "SELECT name, created_at, definition FROM datasets ORDER BY name") {
                text += "d\u{1}" + (row["name"] as String) + "\u{1}" + String(row["created_at"] as Int64) + "\u{1}" + (row["definition"] as String) + "\u{2}"
            }
            return text
        }
    }

    /// Wakes the tails of streams that grew through other connections (other processes sharing
    /// the file). Cheap when nothing changed: one `PRAGMA data_version` on a connection of its
    /// own, which changes exactly when another connection commits. Returns whether it did.
    @discardableResult
    func refreshChanges() throws -> Bool {
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
    func runCheckpoints(every interval: Duration, restartPages: Int = 2000) async {
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

    /// Follows what other processes sharing the file commit, until cancelled: wakes the tails
    /// of streams they append to every poll, and tells `changes` when they define, recreate or
    /// delete streams and channels (the broker then reloads its catalog).
    ///
    /// The poll runs on a thread of its own (a blocking sleep and one `PRAGMA data_version`):
    /// waking an async task every 2 ms costs several times more CPU in timer and thread hops.
    func runPoller(every interval: Duration) async {
        let stop = Atomic<Bool>(false)
        let (stopped, finish) = AsyncStream.makeStream(of: Void.self)
        let micros = UInt32(clamping: interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000)
        Thread.detachNewThread { [self] in
            var catalogVersion = (try? self.catalogVersion()) ?? ""
            var lastCatalogCheck = ContinuousClock.now
            var fileChanged = false
            while !stop.load(ordering: .relaxed) {
                usleep(micros)
                do {
                    if try refreshChanges() { fileChanged = true }
                    // Definitions change rarely: look at most every 500 ms, and only if the file changed.
                    if fileChanged, ContinuousClock.now - lastCatalogCheck >= .milliseconds(500) {
                        lastCatalogCheck = .now
                        let version = try self.catalogVersion()
                        fileChanged = false
                        if version != catalogVersion {
                            catalogVersion = version
                            changes.definitionsChanged()
                        }
                    }
                } catch {
                    logger.warning("store poll failed", metadata: ["error": "\(error)"])
                }
            }
            finish.finish()
        }
        await withTaskCancellationHandler {
            for await _ in stopped {}
        } onCancel: {
            stop.store(true, ordering: .relaxed)
        }
    }
}

/// A store's background loop as a service: runs until cancelled or, in a service group, until
/// graceful shutdown.
struct StoreTask: Service, CustomStringConvertible {
    let description: String
    let body: @Sendable () async -> Void

    init(_ description: String, _ body: @escaping @Sendable () async -> Void) {
        self.description = description
        self.body = body
    }

    func run() async {
        await cancelWhenGracefulShutdown { await body() }
    }
}
