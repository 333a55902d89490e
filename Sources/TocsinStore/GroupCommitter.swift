import Foundation
import GRDB
import Logging
import Metrics
import Synchronization
import TocsinCore

/// Group commit for appends, on a thread of its own: while one transaction is being committed,
/// new appends queue up and all go into the next transaction together. One fsync then covers
/// many publishers, and a lone publisher still commits at once (no timer, no added latency).
///
/// The thread commits with GRDB's blocking API, so a publish costs one thread wake-up on its
/// way to the disk (the publisher's task signals this thread) instead of three (a task to
/// drain the queue, GRDB's writer queue, and back). It sleeps on a semaphore while nothing is
/// queued, and ends once `stop` is called and the queue is empty.
///
/// Each request is all-or-nothing: it is checked (stream exists) before any of its rows is
/// written, and a failure of the transaction fails every request in it — but for `SQLITE_FULL`
/// (no room): then each request is tried again in a transaction of its own, in order, so only
/// those that do not fit fail, with `store_full`. A request with a key
/// its stream stored within the window stores nothing and gets that append's seqs, marked
/// `duplicate` (the key is checked and recorded in the same transaction as the events).
final class GroupCommitter: Sendable {
    typealias Completion = @Sendable (Result<Appended, any Error>) -> Void

    private struct Request {
        var stream: String
        var events: [String]
        var key: String?
        /// The publish's traceparent, stored with each event.
        var trace: String?
        /// A dataset write: `events` are its change events, and the records change with them.
        var dataset: DatasetApply?
        var completion: Completion
    }

    private struct State {
        var queue: [Request] = []
        /// The thread found nothing queued and waits for `wake`; the next append signals it.
        var sleeping = false
        var stopped = false
    }

    /// Most events in one transaction, to bound commit latency under heavy load.
    static let maxEventsPerCommit = 20_000

    /// How many of the queued requests (their event counts, oldest first) go into the next
    /// transaction: as many as fit in `maxEventsPerCommit`, and always the first.
    static func batchLength(_ counts: some Sequence<Int>) -> Int {
        var total = 0
        var take = 0
        for count in counts {
            guard take == 0 || total + count <= maxEventsPerCommit else { break }
            total += count
            take += 1
        }
        return take
    }

    private let state = Mutex(State())
    /// Transactions committed; with `tocsin_published_events_total`, how many events a commit
    /// (and its sync) carries on average.
    let commits = Atomic<Int>(0)
    private let commitsMetric = Counter(label: "tocsin_store_commits_total")
    /// How long each commit took, from taking its batch to durable (waiting for the writer, the
    /// transaction, its sync); one longer than `slowCommitThreshold` is logged (at most once a
    /// minute) and counted.
    private let commitDuration = Timer(label: "tocsin_store_commit_seconds")
    private let slowCommitsMetric = Counter(label: "tocsin_store_slow_commits_total")
    private let slowCommitLog = Mutex(LogThrottle())
    let slowCommitThreshold: Duration
    /// Commits that took longer than `slowCommitThreshold`.
    let slowCommits = Atomic<Int>(0)
    /// Publishes refused because the store was full; they are logged at most once a minute.
    private let storeFullMetric = Counter(label: "tocsin_store_full_rejections_total")
    private let storeFullLog = Mutex(LogThrottle())
    /// Events deleted to make room on streams with `whenFull: dropOldest`.
    private let droppedMetric = Counter(label: "tocsin_store_dropped_events_total")
    private let dropLog = Mutex(LogThrottle())
    /// Signalled once per time the thread went to sleep (`sleeping` true → false), never more.
    private let wake = DispatchSemaphore(value: 0)
    private let pool: DatabasePool
    /// How long a publish key keeps a second append with it from being stored.
    private let publishKeyWindowMillis: Int64
    /// The store's size limit, for the `store_full` message.
    private let maxBytes: Int64?
    private let logger: Logger
    private let nowMillis: @Sendable () -> Int64
    /// Told of each request's committed events, in commit order, on the committing thread.
    private let onCommit: @Sendable (_ stream: String, _ epoch: String, _ events: [StoredEvent]) -> Void

    init(
        pool: DatabasePool, publishKeyWindowMillis: Int64, maxBytes: Int64?, slowCommitThreshold: Duration = .seconds(1),
        nowMillis: @escaping @Sendable () -> Int64 = WallClock.nowMillis, logger: Logger,
        onCommit: @escaping @Sendable (_ stream: String, _ epoch: String, _ events: [StoredEvent]) -> Void) {
        self.pool = pool
        self.publishKeyWindowMillis = publishKeyWindowMillis
        self.maxBytes = maxBytes
        self.slowCommitThreshold = slowCommitThreshold
        self.nowMillis = nowMillis
        self.logger = logger
        self.onCommit = onCommit
        Thread.detachNewThread { [self] in
            // Named for top, perf and /proc (Foundation's Thread.name does not reach the kernel on
            // Linux, and pthread_setname_np is not visible to Swift there).
            try? "tocsin-commit".write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
            run()
        }
    }

    func append(stream: String, events: [String], key: String?, trace: String? = nil, dataset: DatasetApply? = nil) async throws -> Appended {
        try await withCheckedThrowingContinuation { continuation in
            append(stream: stream, events: events, key: key, trace: trace, dataset: dataset) { continuation.resume(with: $0) }
        }
    }

    /// Queues an append and returns at once; `completion` runs on the commit thread once the
    /// request is durable or has failed. Requests complete in the order they were queued.
    func append(
        stream: String, events: [String], key: String?, trace: String? = nil, dataset: DatasetApply? = nil, completion: @escaping Completion
    ) {
        let outcome = state.withLock { s -> (accepted: Bool, signal: Bool) in
            guard !s.stopped else { return (false, false) }
            s.queue.append(Request(stream: stream, events: events, key: key, trace: trace, dataset: dataset, completion: completion))
            let signal = s.sleeping
            s.sleeping = false
            return (true, signal)
        }
        if outcome.signal { wake.signal() }
        if !outcome.accepted {
            completion(.failure(TocsinError(.unavailable, "the store is closed")))
        }
    }

    /// Appends waiting for the next transaction (not counting the one being committed).
    var queued: Int { state.withLock { $0.queue.count } }

    /// Commits what is queued, then lets the thread end. Appends after this fail.
    func stop() {
        let signal = state.withLock { s -> Bool in
            s.stopped = true
            let signal = s.sleeping
            s.sleeping = false
            return signal
        }
        if signal { wake.signal() }
    }

    private func run() {
        while true {
            let next = state.withLock { s -> [Request]? in
                let take = Self.batchLength(s.queue.lazy.map(\.events.count))
                if take == 0 {
                    if s.stopped { return nil }
                    s.sleeping = true
                    return []
                }
                let batch = Array(s.queue.prefix(take))
                s.queue.removeFirst(take)
                return batch
            }
            guard let batch = next else { return }
            if batch.isEmpty {
                wake.wait()
            } else {
                commit(batch)
            }
        }
    }

    private func recordDuration(since started: ContinuousClock.Instant, of batch: [Request]) {
        let took = ContinuousClock.now - started
        commitDuration.recordNanoseconds(took.nanoseconds)
        guard took > slowCommitThreshold else { return }
        slowCommits.add(1, ordering: .relaxed)
        slowCommitsMetric.increment()
        if let slow = slowCommitLog.withLock({ $0.occurred() }) {
            logger.warning(
                "a commit was slow: publishes waited for the disk's sync, or for another writer of the SQLite file",
                metadata: ["tookMs": "\(took.milliseconds)", "events": "\(batch.reduce(0) { $0 + $1.events.count })", "slowCommits": "\(slow)"])
        }
    }

    private func refuseForRoom(_ request: Request) {
        storeFullMetric.increment()
        if let refused = storeFullLog.withLock({ $0.occurred() }) {
            logger.warning(
                "the store is full: publishes are refused with store_full until retention or an operator frees space",
                metadata: ["refused": "\(refused)"])
        }
        request.completion(.failure(TocsinError.storeFull(maxBytes: maxBytes)))
    }

    private func reportDropped(_ dropped: Int, stream: String) {
        droppedMetric.increment(by: Int64(dropped))
        if let times = dropLog.withLock({ $0.occurred() }) {
            logger.warning(
                "the store is full: dropped the oldest events of a stream that keeps new events first (whenFull: dropOldest)",
                metadata: ["stream": "\(stream)", "dropped": "\(dropped)", "times": "\(times)"])
        }
    }

    /// Whether `stream`'s retention says `whenFull: dropOldest` (read when a publish to it found
    /// the store full).
    private func dropsOldest(_ stream: String) -> Bool {
        let info = try? pool.read { db in try SQLiteStore.fetchStream(db, name: stream) }
        return info?.definition.retention.whenFull == .dropOldest
    }

    /// Nothing of the stream is left to drop.
    private struct NothingToDrop: Error {}

    /// Inside the transaction that retries a request refused for room (on a `whenFull:
    /// dropOldest` stream): deletes the stream's oldest events, at least twice the request's size
    /// (doubling with each attempt) and no less than 64 KiB, so a store that stays full does not
    /// pay a delete for every publish. The deletes commit only with the request: if it still
    /// does not fit, both roll back, and nothing is lost for nothing. Returns how many it deleted.
    private func dropOldest(_ db: Database, toFit request: Request, attempt: Int) throws -> Int {
        let wanted = Int64(request.events.reduce(0) { $0 + $1.utf8.count }) * (Int64(2) << attempt)
        let target = max(wanted, 64 << 10)
        // The oldest events worth `target` bytes (the cursor is gone before the delete).
        func lastToDrop() throws -> Int64? {
            var freed: Int64 = 0
            var upTo: Int64?
            let oldest = try Row.fetchCursor(
                db, sql: "SELECT seq, length(CAST(body AS BLOB)) FROM events WHERE stream = ? ORDER BY seq", arguments: [request.stream])
            while freed < target, let event = try oldest.next() {
                upTo = event[0]
                freed += event[1] as Int64
            }
            return upTo
        }
        guard let upTo = try lastToDrop() else { throw NothingToDrop() }
        try db.execute(sql: "DELETE FROM events WHERE stream = ? AND seq <= ?", arguments: [request.stream, upTo])
        let deleted = db.changesCount
        try db.execute(
            sql: "UPDATE streams SET first_seq = COALESCE((SELECT MIN(seq) FROM events WHERE stream = ?1), last_seq + 1) WHERE name = ?1",
            arguments: [request.stream])
        return deleted
    }

    /// Records `key` for an append of `count` events from `seqs` on, unless an append within the
    /// window recorded it in this epoch: then returns where that one put its events, and nothing
    /// may be stored. One statement in the common case (a new key); a row from before the window,
    /// or from an earlier epoch of the stream, is replaced.
    private func claim(
        _ key: String, stream: String, epoch: String, seqs first: Int64, count: Int, db: Database, nowMillis: Int64
    ) throws -> (seq: Int64, count: Int64)? {
        try db.cachedStatement(
            sql: """
                INSERT INTO publish_keys (stream, key, epoch, first_seq, count, created_at) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (stream, key) DO UPDATE
                SET epoch = excluded.epoch, first_seq = excluded.first_seq, count = excluded.count, created_at = excluded.created_at
                WHERE publish_keys.created_at < ? OR publish_keys.epoch != excluded.epoch
                """
        ).execute(arguments: [stream, key, epoch, first, count, nowMillis, nowMillis - publishKeyWindowMillis])
        if db.changesCount == 1 { return nil }
        let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT first_seq, count FROM publish_keys WHERE stream = ? AND key = ?"), arguments: [stream, key])
        guard let row else { throw TocsinError(.internalError, "publish key '\(key)' conflicted but cannot be read back") }
        return (row[0], row[1])
    }

    /// Commits `batch` in one transaction and settles every request, on this thread, as soon as
    /// it is durable; then tells the change feed (whose consumers dispatch the events here).
    /// `dropAttempt` > 0: a retry of a single request refused for room, on a stream that drops
    /// its oldest events to make it (see `dropOldest`).
    private func commit(_ batch: [Request], dropAttempt: Int = 0) {
        let onCommit = self.onCommit
        let started = ContinuousClock.now
        do {
            try pool.writeWithoutTransaction { db in
                var outcomes: [Result<Appended, TocsinError>] = []
                var now: Int64 = 0
                var dropped = 0
                try db.inTransaction(.immediate) {
                    outcomes = []
                    if dropAttempt > 0 { dropped = try dropOldest(db, toFit: batch[0], attempt: dropAttempt - 1) }
                    // Read once the writer is ours: the events' time, and the start of their keys' window.
                    now = nowMillis()
                    let select = try db.cachedStatement(sql: "SELECT epoch, last_seq FROM streams WHERE name = ?")
                    let insert = try db.cachedStatement(sql: "INSERT INTO events (stream, seq, published_at, body, trace) VALUES (?, ?, ?, ?, ?)")
                    let update = try db.cachedStatement(sql: "UPDATE streams SET last_seq = ? WHERE name = ?")
                    for item in batch {
                        guard let row = try Row.fetchOne(select, arguments: [item.stream]) else {
                            outcomes.append(.failure(TocsinError(.unknownStream, "no stream named '\(item.stream)'")))
                            continue
                        }
                        let epoch: String = row[0]
                        var seq: Int64 = row[1]
                        if let dataset = item.dataset, try !dataset.apply(db, version: seq + Int64(item.events.count)) {
                            outcomes.append(.failure(DatasetRules.unknown(dataset.name)))
                            continue
                        }
                        if let key = item.key, let first = try claim(key, stream: item.stream, epoch: epoch, seqs: seq + 1, count: item.events.count, db: db, nowMillis: now) {
                            outcomes.append(.success(Appended(epoch: epoch, seqs: Array(first.seq..<first.seq + first.count), duplicate: true)))
                            continue
                        }
                        var seqs: [Int64] = []
                        seqs.reserveCapacity(item.events.count)
                        for body in item.events {
                            seq += 1
                            try insert.execute(arguments: [item.stream, seq, now, body, item.trace])
                            seqs.append(seq)
                        }
                        try update.execute(arguments: [seq, item.stream])
                        outcomes.append(.success(Appended(epoch: epoch, seqs: seqs)))
                    }
                    return .commit
                }
                // Committed (and synced). Nothing below throws, so no request is settled twice.
                commits.add(1, ordering: .relaxed)
                if dropped > 0 { reportDropped(dropped, stream: batch[0].stream) }
                recordDuration(since: started, of: batch)
                commitsMetric.increment()
                // Publishers first: their replies need not wait for the fan-out below.
                for (request, outcome) in zip(batch, outcomes) {
                    request.completion(outcome.mapError { $0 })
                }
                // Still holding the writer, so the feed hears of commits in the order they were
                // made, before any later transaction (a recreate's new epoch) can tell it more.
                for (request, outcome) in zip(batch, outcomes) {
                    if case .success(let r) = outcome, !r.duplicate {
                        onCommit(request.stream, r.epoch, zip(r.seqs, request.events).map { StoredEvent(seq: $0, publishedAtMillis: now, json: $1, trace: request.trace) })
                    }
                }
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_FULL {
            // One request too big for the room left must not fail the others with it: each
            // gets its own transaction, in order, and only those that do not fit fail.
            if batch.count > 1 {
                for request in batch { commit([request]) }
                return
            }
            // A stream that prefers new events to old ones makes room, a few times at most.
            if dropAttempt < 6, dropAttempt > 0 || dropsOldest(batch[0].stream) {
                commit(batch, dropAttempt: dropAttempt + 1)
                return
            }
            refuseForRoom(batch[0])
        } catch is NothingToDrop {
            refuseForRoom(batch[0])
        } catch {
            // Whatever SQLite refused may be one request's doing: each alone, in order, so only
            // what fails on its own fails (a disk that fails them all costs a transaction each).
            if batch.count > 1 {
                for request in batch { commit([request]) }
                return
            }
            logger.error("append transaction failed", metadata: ["error": "\(error)", "requests": "\(batch.count)"])
            for request in batch {
                request.completion(.failure(TocsinError(.internalError, "the store could not commit the events: \(error)")))
            }
        }
    }
}
