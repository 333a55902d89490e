import Foundation
import Logging
import Metrics
import PostgresNIO
import Synchronization
import TocsinCore

/// Group commit for appends to PostgreSQL: one task commits; appends queued while it commits
/// go into its next transaction together, so one round trip and one WAL flush cover many
/// publishers, and a lone publisher commits at once.
///
/// A transaction locks the rows of the streams it appends to, in name order (brokers on other
/// hosts lock the same way, so they queue instead of deadlocking), numbers each request's
/// events from the stream's `last_seq`, and inserts them all in one statement. Each request is
/// all-or-nothing: one that names an unknown stream, or that does not fit under the size
/// limit, is refused inside the transaction and the rest commit. When the transaction fails
/// (the database is out of reach) every request in it fails with `store_unavailable`: nothing
/// is acknowledged that is not known to be committed. When the database refuses the
/// transaction for what one request carries, each request is committed alone, so only that one fails.
final class PostgresCommitter: Sendable {
    typealias Completion = @Sendable (Result<Appended, any Error>) -> Void

    struct Request: Sendable {
        var stream: String
        var events: [String]
        var key: String?
        /// The publish's traceparent, stored with each event.
        var trace: String?
        /// A dataset write: `events` are its change events, and the records change with them.
        var dataset: DatasetApply?
        var completion: Completion
        var bytes: Int64 { events.reduce(0) { $0 + Int64($1.utf8.count) } }
    }

    private struct State {
        var queue: [Request] = []
        var waiter: CheckedContinuation<Void, Never>?
        var stopped = false
        /// Requests in the transaction being committed (tests).
        var committing = 0
    }

    /// Requests waiting for the next transaction (tests).
    var queued: Int { state.withLock { $0.queue.count } }
    /// Requests in the transaction being committed (tests).
    var committing: Int { state.withLock { $0.committing } }

    private let state = Mutex(State())
    private let connections: PostgresConnections
    private let publishKeyWindowMillis: Int64
    private let maxBytes: Int64?
    private let slowCommitThreshold: Duration
    private let nowMillis: @Sendable () -> Int64
    private let logger: Logger
    /// What this store's append notifications carry, so its own listener can skip them (its
    /// tails heard of these events at the commit already).
    let notificationPayload = "events " + UUID().uuidString
    private let onCommit: @Sendable (_ stream: String, _ epoch: String, _ events: [StoredEvent]) -> Void
    private let loop = Mutex<Task<Void, Never>?>(nil)
    let commits = Atomic<Int>(0)
    private let commitsMetric = Counter(label: "tocsin_store_commits_total")
    private let commitDuration = Timer(label: "tocsin_store_commit_seconds")
    private let slowCommitsMetric = Counter(label: "tocsin_store_slow_commits_total")
    private let storeFullMetric = Counter(label: "tocsin_store_full_rejections_total")
    private let droppedMetric = Counter(label: "tocsin_store_dropped_events_total")
    private let unavailableMetric = Counter(label: "tocsin_store_unavailable_total")
    private let failureLog = Mutex(LogThrottle())
    private let slowLog = Mutex(LogThrottle())
    private let storeFullLog = Mutex(LogThrottle())
    private let dropLog = Mutex(LogThrottle())

    init(
        connections: PostgresConnections, publishKeyWindowMillis: Int64, maxBytes: Int64?, slowCommitThreshold: Duration,
        nowMillis: @escaping @Sendable () -> Int64, logger: Logger,
        onCommit: @escaping @Sendable (_ stream: String, _ epoch: String, _ events: [StoredEvent]) -> Void
    ) {
        self.connections = connections
        self.publishKeyWindowMillis = publishKeyWindowMillis
        self.maxBytes = maxBytes
        self.slowCommitThreshold = slowCommitThreshold
        self.nowMillis = nowMillis
        self.logger = logger
        self.onCommit = onCommit
        loop.withLock { $0 = Task { await self.run() } }
    }

    func append(stream: String, events: [String], key: String?, trace: String? = nil, dataset: DatasetApply? = nil) async throws -> Appended {
        try await withCheckedThrowingContinuation { continuation in
            append(stream: stream, events: events, key: key, trace: trace, dataset: dataset) { continuation.resume(with: $0) }
        }
    }

    /// Queues an append and returns at once; `completion` runs on the commit task once the
    /// request is durable or has failed. Requests complete in the order they were queued.
    func append(
        stream: String, events: [String], key: String?, trace: String? = nil, dataset: DatasetApply? = nil, completion: @escaping Completion
    ) {
        let (accepted, waiter) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !s.stopped else { return (false, nil) }
            s.queue.append(Request(stream: stream, events: events, key: key, trace: trace, dataset: dataset, completion: completion))
            defer { s.waiter = nil }
            return (true, s.waiter)
        }
        waiter?.resume()
        if !accepted { completion(.failure(TocsinError(.unavailable, "the store is closed"))) }
    }

    /// Commits what is queued, then ends the commit task. Appends after this fail.
    func stop() async {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.stopped = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
        await loop.withLock({ $0 })?.value
    }

    private func run() async {
        while true {
            let next = state.withLock { s -> [Request]? in
                let take = GroupCommitter.batchLength(s.queue.lazy.map(\.events.count))
                s.committing = take
                if take == 0 { return s.stopped ? nil : [] }
                defer { s.queue.removeFirst(take) }
                return Array(s.queue.prefix(take))
            }
            guard let batch = next else { return }
            if batch.isEmpty {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = state.withLock { s -> Bool in
                        if !s.queue.isEmpty || s.stopped { return true }
                        s.waiter = c
                        return false
                    }
                    if now { c.resume() }
                }
            } else {
                await commit(batch)
            }
        }
    }

    /// What one request came to inside the transaction.
    private enum Outcome {
        /// `dropped`: events of the stream deleted to make room (`whenFull: dropOldest`).
        case stored(Appended, publishedAt: Int64, dropped: Int)
        case duplicate(Appended)
        case refused(TocsinError)
    }

    private struct StreamState {
        var epoch: String
        var lastSeq: Int64
        var bytes: Int64
        var dropsOldest: Bool
    }

    private func commit(_ batch: [Request]) async {
        let started = ContinuousClock.now
        let outcomes: [Outcome]
        do {
            outcomes = try await connections.run { [self] db in
                try await PostgresStore.inTransaction(db, logger: logger) { db in try await transact(batch, db) }
            }
        } catch {
            let mapped = TocsinError.fromPostgres(error)
            let outOfReach = (mapped as? TocsinError)?.code == .storeUnavailable
            if !outOfReach, batch.count > 1 {
                // Something in one request the database refused, not its being out of reach:
                // each alone, in order, so that one fails and the publishes beside it do not.
                for request in batch { await commit([request]) }
                return
            }
            if outOfReach { unavailableMetric.increment() }
            if let times = failureLog.withLock({ $0.occurred() }) {
                logger.warning(
                    outOfReach
                        ? "an append transaction failed: publishes are refused until the database answers again"
                        : "the database refused an append",
                    metadata: ["error": "\(mapped)", "requests": "\(batch.count)", "times": "\(times)"])
            }
            for request in batch { request.completion(.failure(mapped)) }
            return
        }
        commits.add(1, ordering: .relaxed)
        commitsMetric.increment()
        let took = ContinuousClock.now - started
        commitDuration.recordNanoseconds(took.nanoseconds)
        if took > slowCommitThreshold {
            slowCommitsMetric.increment()
            if let slow = slowLog.withLock({ $0.occurred() }) {
                logger.warning("a commit was slow: publishes waited for PostgreSQL", metadata: ["tookMs": "\(took.milliseconds)", "slowCommits": "\(slow)"])
            }
        }
        report(zip(batch, outcomes))
        // Publishers first: their replies need not wait for the fan-out below.
        for (request, outcome) in zip(batch, outcomes) {
            switch outcome {
            case .stored(let appended, _, _), .duplicate(let appended): request.completion(.success(appended))
            case .refused(let error): request.completion(.failure(error))
            }
        }
        for (request, outcome) in zip(batch, outcomes) {
            if case .stored(let appended, let at, _) = outcome {
                onCommit(request.stream, appended.epoch, zip(appended.seqs, request.events).map { StoredEvent(seq: $0, publishedAtMillis: at, json: $1, trace: request.trace) })
            }
        }
    }

    /// Counts and logs (at most once a minute each) what the committed transaction refused for
    /// room and dropped to make room: only now, since a transaction that failed did neither.
    private func report(_ settled: Zip2Sequence<[Request], [Outcome]>) {
        for (request, outcome) in settled {
            switch outcome {
            case .stored(_, _, let dropped) where dropped > 0:
                droppedMetric.increment(by: Int64(dropped))
                if let times = dropLog.withLock({ $0.occurred() }) {
                    logger.warning(
                        "the store is full: dropped the oldest events of a stream that keeps new events first (whenFull: dropOldest)",
                        metadata: ["stream": "\(request.stream)", "dropped": "\(dropped)", "times": "\(times)"])
                }
            case .refused(let error) where error.code == .storeFull:
                storeFullMetric.increment()
                if let refused = storeFullLog.withLock({ $0.occurred() }) {
                    logger.warning(
                        "the store is full: publishes are refused with store_full until retention or an operator frees space",
                        metadata: ["refused": "\(refused)"])
                }
            default:
                break
            }
        }
    }

    /// The body of an append transaction: every request settled as stored, duplicate or refused.
    private func transact(_ batch: [Request], _ db: PostgresConnection) async throws -> [Outcome] {
        let names = Array(Set(batch.map(\.stream))).sorted()
        var streams: [String: StreamState] = [:]
        for try await (name, epoch, lastSeq, bytes, definition) in try await db.query(
            "SELECT name, epoch, last_seq, bytes, definition FROM streams WHERE name = ANY(\(names)) ORDER BY name FOR UPDATE",
            logger: logger
        ).decode((String, String, Int64, Int64, String).self) {
            let dropsOldest = (try? StoredDefinition.stream(name: name, text: definition))?.retention.whenFull == .dropOldest
            streams[name] = StreamState(epoch: epoch, lastSeq: lastSeq, bytes: bytes, dropsOldest: dropsOldest)
        }
        var total: Int64 = 0
        if maxBytes != nil {
            for try await sum in try await db.query("SELECT COALESCE(SUM(bytes), 0)::bigint FROM streams", logger: logger).decode(Int64.self) {
                total = sum
            }
        }
        // Read once the rows are ours: the events' time, and the start of their keys' window.
        let now = nowMillis()
        var outcomes: [Outcome] = []
        var rows: (streams: [String], seqs: [Int64], bodies: [String], traces: [String]) = ([], [], [], [])
        for request in batch {
            guard var stream = streams[request.stream] else {
                outcomes.append(.refused(TocsinError(.unknownStream, "no stream named '\(request.stream)'")))
                continue
            }
            let first = stream.lastSeq + 1
            if let key = request.key,
                let stored = try await claim(key, stream: request.stream, epoch: stream.epoch, first: first, count: request.events.count, now: now, db)
            {
                outcomes.append(.duplicate(Appended(epoch: stream.epoch, seqs: Array(stored.first..<stored.first + stored.count), duplicate: true)))
                continue
            }
            let bytes = request.bytes
            var dropped = 0
            if let maxBytes, total + bytes > maxBytes {
                let made: (freed: Int64, count: Int) = stream.dropsOldest
                    ? try await dropOldest(request.stream, need: total + bytes - maxBytes, wanted: bytes, stored: stream.bytes, db) : (0, 0)
                let freed = made.freed
                dropped = made.count
                if freed == 0 {
                    if let key = request.key {
                        try await db.query("DELETE FROM publish_keys WHERE stream = \(request.stream) AND key = \(key)", logger: logger)
                    }
                    outcomes.append(.refused(TocsinError.storeFull(maxBytes: maxBytes)))
                    continue
                }
                total -= freed
                stream.bytes -= freed
            }
            let seqs = Array(first..<first + Int64(request.events.count))
            if let dataset = request.dataset, try await !apply(dataset, version: seqs.last ?? stream.lastSeq, db) {
                outcomes.append(.refused(DatasetRules.unknown(dataset.name)))
                continue
            }
            for (seq, body) in zip(seqs, request.events) {
                rows.streams.append(request.stream)
                rows.seqs.append(seq)
                rows.bodies.append(body)
                rows.traces.append(request.trace ?? "")  // postgres-nio encodes no array of optionals
            }
            stream.lastSeq = seqs.last ?? stream.lastSeq
            stream.bytes += bytes
            total += bytes
            streams[request.stream] = stream
            outcomes.append(.stored(Appended(epoch: stream.epoch, seqs: seqs), publishedAt: now, dropped: dropped))
        }
        guard !rows.seqs.isEmpty else { return outcomes }
        try await db.query(
            """
            INSERT INTO events (stream, seq, published_at, body, trace)
            SELECT s, q, \(now), b, NULLIF(t, '') FROM unnest(\(rows.streams)::text[], \(rows.seqs)::bigint[], \(rows.bodies)::text[], \(rows.traces)::text[])
                AS t(s, q, b, t)
            """, logger: logger)
        let touched = names.filter { name in rows.streams.contains(name) }
        try await db.query(
            """
            UPDATE streams AS s SET last_seq = u.last_seq, bytes = u.bytes
            FROM unnest(\(touched)::text[], \(touched.map { streams[$0]!.lastSeq })::bigint[], \(touched.map { streams[$0]!.bytes })::bigint[])
                AS u(name, last_seq, bytes)
            WHERE s.name = u.name
            """, logger: logger)
        // A wake-up for brokers elsewhere; delivered when this commits.
        try await db.query("SELECT pg_notify('tocsin_changes', \(notificationPayload))", logger: logger)
        return outcomes
    }

    /// Sets a dataset's version and applies its writes (the last per key); false (nothing done)
    /// if there is no such dataset.
    private func apply(_ dataset: DatasetApply, version: Int64, _ db: PostgresConnection) async throws -> Bool {
        var found = false
        for try await _ in try await db.query(
            "UPDATE datasets SET version = \(version) WHERE name = \(dataset.name) RETURNING 1", logger: logger) { found = true }
        guard found else { return false }
        let net = dataset.net
        let upserts = net.filter { $0.body != nil }
        let deletes = net.filter { $0.body == nil }.map(\.key)
        if !upserts.isEmpty {
            try await db.query(
                """
                INSERT INTO dataset_records (dataset, key, body)
                SELECT \(dataset.name), k, b FROM unnest(\(upserts.map(\.key))::text[], \(upserts.map { $0.body! })::text[]) AS t(k, b)
                ON CONFLICT (dataset, key) DO UPDATE SET body = excluded.body
                """, logger: logger)
        }
        if !deletes.isEmpty {
            try await db.query("DELETE FROM dataset_records WHERE dataset = \(dataset.name) AND key = ANY(\(deletes)::text[])", logger: logger)
        }
        return true
    }

    /// Records `key` for an append of `count` events from `first` on, unless an append within
    /// the window recorded it in this epoch: then returns where that one put its events.
    private func claim(
        _ key: String, stream: String, epoch: String, first: Int64, count: Int, now: Int64, _ db: PostgresConnection
    ) async throws -> (first: Int64, count: Int64)? {
        var claimed = false
        for try await _ in try await db.query(
            """
            INSERT INTO publish_keys (stream, key, epoch, first_seq, count, created_at)
            VALUES (\(stream), \(key), \(epoch), \(first), \(Int64(count)), \(now))
            ON CONFLICT (stream, key) DO UPDATE
            SET epoch = excluded.epoch, first_seq = excluded.first_seq, count = excluded.count, created_at = excluded.created_at
            WHERE publish_keys.created_at < \(now - publishKeyWindowMillis) OR publish_keys.epoch <> excluded.epoch
            RETURNING 1
            """, logger: logger)
        { claimed = true }
        if claimed { return nil }
        for try await row in try await db.query(
            "SELECT first_seq, count FROM publish_keys WHERE stream = \(stream) AND key = \(key)", logger: logger
        ).decode((Int64, Int64).self) { return row }
        throw TocsinError(.internalError, "publish key '\(key)' conflicted but cannot be read back")
    }

    /// Inside the transaction of a request that does not fit, on a `whenFull: dropOldest`
    /// stream: deletes the stream's oldest events, at least `need` bytes and, when the stream
    /// has them, twice the request or 64 KiB (so a store that stays full does not pay a delete
    /// for every publish). Returns the bytes freed: 0, deleting nothing, when the stream's whole
    /// history would not make room (the request is then refused with its history intact).
    private func dropOldest(
        _ stream: String, need: Int64, wanted: Int64, stored: Int64, _ db: PostgresConnection
    ) async throws -> (freed: Int64, count: Int) {
        guard stored >= need else { return (0, 0) }
        let goal = min(max(need, 2 * wanted, 64 << 10), stored)
        var upTo: Int64?
        for try await seq in try await db.query(
            """
            SELECT seq FROM (
                SELECT seq, SUM(octet_length(body)) OVER (ORDER BY seq) AS freed FROM events WHERE stream = \(stream)
            ) AS t WHERE freed >= \(goal) ORDER BY seq LIMIT 1
            """, logger: logger
        ).decode(Int64.self) { upTo = seq }
        guard let upTo else { return (0, 0) }
        var freed: Int64 = 0
        var count = 0
        for try await (n, bytes) in try await db.query(
            """
            WITH gone AS (DELETE FROM events WHERE stream = \(stream) AND seq <= \(upTo) RETURNING octet_length(body) AS size)
            SELECT COUNT(*), COALESCE(SUM(size), 0)::bigint FROM gone
            """, logger: logger
        ).decode((Int, Int64).self) {
            count = n
            freed = bytes
        }
        try await db.query(
            "UPDATE streams SET first_seq = \(upTo + 1) WHERE name = \(stream)", logger: logger)
        return (freed, count)
    }
}
