import Foundation
import Logging
import PostgresNIO
public import TocsinCore

/// Durable subscriptions and their acknowledged positions; events read back; retention; usage.
extension PostgresStore {
    typealias SubscriptionRow = (String, String, String, String, String, Int64)

    public func openSubscription(
        client: String, channel: String, params: [String: JSONValue], initial: StreamPosition, maxPerClient: Int?
    ) async throws -> (SubscriptionRecord, created: Bool) {
        let paramsText = JSONValue.object(params).serialized
        let logger = logger
        // Resuming (every reconnect) only reads; creating takes the client's lock, so the count
        // and the insert are one step for that client across every broker.
        if let existing = try await read({ db in
            try await Self.subscriptions(
                db, "SELECT id, client, channel, params, epoch, acked_seq FROM subscriptions WHERE client = \(client) AND channel = \(channel) AND params = \(paramsText)",
                logger: logger)
        }).first {
            return (try Self.record(existing), false)
        }
        // Many clients subscribe at once after a broker restarts or fails over: their creations
        // share transactions and statements instead of taking a transaction of six each.
        return try await creations.submit(
            SubscriptionCreations.Request(
                client: client, channel: channel, params: params, paramsText: paramsText, initial: initial, maxPerClient: maxPerClient,
                newID: Self.newSubscriptionID()))
    }

    /// Opens a batch of subscriptions in one transaction of four or five statements, whatever
    /// its size: each request as if they had run one after another (`SubscriptionCreations`).
    /// The transaction holds each client's lock, so the counts and inserts are one step for
    /// those clients across every broker. A batch the database refuses is stored not at all;
    /// then, unless the database is out of reach, each request is tried alone.
    static func openSubscriptions(
        _ batch: [SubscriptionCreations.Request], connections: PostgresConnections, nowMillis: @escaping @Sendable () -> Int64, logger: Logger
    ) async -> [Result<(SubscriptionRecord, Bool), any Error>] {
        let clients = batch.map(\.client), channels = batch.map(\.channel), params = batch.map(\.paramsText)
        let distinctClients = Array(Set(clients))
        let lockNames = distinctClients.map { "subscriber:" + $0 }
        let limited = batch.contains { $0.maxPerClient != nil }
        do {
            let outcomes = try await connections.run { db in
                try await inTransaction(db, logger: logger) { db in
                    // One advisory lock per client, taken in the order of their keys, so two
                    // brokers' batches never wait for each other in a cycle.
                    try await db.query(
                        """
                        SELECT pg_advisory_xact_lock(k) FROM (
                            SELECT DISTINCT hashtextextended(name, 0) AS k FROM unnest(\(lockNames)::text[]) AS name ORDER BY k
                        ) AS locks
                        """, logger: logger)
                    var stored: [SubscriptionCreations.Key: SubscriptionRecord] = [:]
                    for row in try await Self.subscriptions(
                        db,
                        """
                        SELECT s.id, s.client, s.channel, s.params, s.epoch, s.acked_seq FROM subscriptions AS s
                        JOIN unnest(\(clients)::text[], \(channels)::text[], \(params)::text[]) AS i(client, channel, params)
                        ON s.client = i.client AND s.channel = i.channel AND s.params = i.params
                        """, logger: logger)
                    {
                        stored[SubscriptionCreations.Key(client: row.1, channel: row.2, paramsText: row.3)] = try Self.record(row)
                    }
                    var held: [String: Int] = [:]
                    if limited {
                        for try await (client, count) in try await db.query(
                            "SELECT client, COUNT(*) FROM subscriptions WHERE client = ANY(\(distinctClients)::text[]) GROUP BY client", logger: logger
                        ).decode((String, Int64).self) {
                            held[client] = Int(count)
                        }
                    }
                    let outcomes = SubscriptionCreations.decide(batch, stored: stored, held: held)
                    let created = zip(batch, outcomes).compactMap { request, outcome in
                        if case .created(let record) = outcome { (request, record) } else { nil }
                    }
                    if !created.isEmpty {
                        let ids = created.map(\.1.id), newClients = created.map(\.0.client), newChannels = created.map(\.0.channel)
                        let newParams = created.map(\.0.paramsText), epochs = created.map(\.0.initial.epoch), seqs = created.map(\.0.initial.seq)
                        let at = Array(repeating: nowMillis(), count: created.count)
                        try await db.query(
                            """
                            INSERT INTO subscriptions (id, client, channel, params, epoch, acked_seq, created_at)
                            SELECT * FROM unnest(\(ids)::text[], \(newClients)::text[], \(newChannels)::text[], \(newParams)::text[],
                                \(epochs)::text[], \(seqs)::bigint[], \(at)::bigint[])
                            """, logger: logger)
                    }
                    return outcomes
                }
            }
            return zip(batch, outcomes).map { request, outcome in
                switch outcome {
                case .resumed(let record): .success((record, false))
                case .created(let record): .success((record, true))
                case .refused(let held, let limit): .failure(TocsinError.tooManySubscriptions(client: request.client, held: held, limit: limit))
                }
            }
        } catch let error as TocsinError where batch.count > 1 && error.code != .storeUnavailable {
            // Something in one request the database refused (not its being out of reach): each
            // alone, so that one fails and the others do not.
            var results: [Result<(SubscriptionRecord, Bool), any Error>] = []
            for request in batch {
                results += await openSubscriptions([request], connections: connections, nowMillis: nowMillis, logger: logger)
            }
            return results
        } catch {
            return Array(repeating: .failure(error), count: batch.count)
        }
    }

    public func subscriptions(client: String) async throws -> [SubscriptionRecord] {
        let logger = logger
        return try await read { db in
            try await Self.subscriptions(
                db, "SELECT id, client, channel, params, epoch, acked_seq FROM subscriptions WHERE client = \(client) ORDER BY created_at, id",
                logger: logger)
        }.map(Self.record)
    }

    public func subscription(id: String) async throws -> SubscriptionRecord? {
        let logger = logger
        return try await read { db in
            try await Self.subscriptions(db, "SELECT id, client, channel, params, epoch, acked_seq FROM subscriptions WHERE id = \(id)", logger: logger)
        }.first.map(Self.record)
    }

    public func deleteSubscription(id: String) async throws -> Bool {
        let logger = logger
        return try await read { db in
            var deleted = false
            for try await _ in try await db.query("DELETE FROM subscriptions WHERE id = \(id) RETURNING 1", logger: logger) { deleted = true }
            return deleted
        }
    }

    public func saveAcks(_ acks: [String: StreamPosition]) async throws {
        guard !acks.isEmpty else { return }
        let ids = Array(acks.keys)
        let epochs = ids.map { acks[$0]!.epoch }
        let seqs = ids.map { acks[$0]!.seq }
        let logger = logger
        // One statement: a new epoch always replaces the old one; within an epoch the cursor only moves forward.
        _ = try await read { db in
            try await db.query(
                """
                UPDATE subscriptions AS s SET epoch = a.epoch, acked_seq = a.seq
                FROM unnest(\(ids)::text[], \(epochs)::text[], \(seqs)::bigint[]) AS a(id, epoch, seq)
                WHERE s.id = a.id AND (s.epoch <> a.epoch OR s.acked_seq < a.seq)
                """, logger: logger)
        }
    }

    static func subscriptions(_ db: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> [SubscriptionRow] {
        var rows: [SubscriptionRow] = []
        for try await row in try await db.query(query, logger: logger).decode(SubscriptionRow.self) { rows.append(row) }
        return rows
    }

    static func record(_ row: SubscriptionRow) throws -> SubscriptionRecord {
        SubscriptionRecord(
            id: row.0, client: row.1, channel: row.2, params: try JSONValue.parse(row.3).objectValue ?? [:], epoch: row.4, ackedSeq: row.5)
    }

    static func newSubscriptionID() -> String {
        "s_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
    }

    // MARK: Events

    public func append(stream: String, events: [String], key: String?, trace: String?) async throws -> Appended {
        try await committer.append(stream: stream, events: events, key: key, trace: trace)
    }

    public func append(
        stream: String, events: [String], key: String?, trace: String?, completion: @escaping @Sendable (Result<Appended, any Error>) -> Void
    ) {
        committer.append(stream: stream, events: events, key: key, trace: trace, completion: completion)
    }

    public func readEvents(stream: String, after: Int64, limit: Int) async throws -> [StoredEvent] {
        let logger = logger
        return try await read { db in
            var events: [StoredEvent] = []
            events.reserveCapacity(min(limit, 1024))
            for try await (seq, at, body, trace) in try await db.query(
                "SELECT seq, published_at, body, trace FROM events WHERE stream = \(stream) AND seq > \(after) ORDER BY seq LIMIT \(limit)",
                logger: logger
            ).decode((Int64, Int64, String, String?).self) {
                events.append(StoredEvent(seq: seq, publishedAtMillis: at, json: body, trace: trace))
            }
            return events
        }
    }

    // MARK: Retention and usage

    /// Each stream in a transaction of its own, its row locked (appends to it wait a moment).
    public func enforceRetention(nowMillis: Int64) async throws -> Int {
        let logger = logger
        let keysBefore = nowMillis - publishKeyWindowMillis
        var deleted = 0
        for info in try await streams() {
            let retention = info.definition.retention
            var before: Int64?
            if let maxAge = retention.maxAgeSeconds, maxAge > 0 {
                let (ageMillis, tooLong) = maxAge.multipliedReportingOverflow(by: 1000)
                let (cutoff, beforeAll) = nowMillis.subtractingReportingOverflow(ageMillis)
                if !tooLong && !beforeAll { before = cutoff }
            }
            var upTo: Int64?
            if let maxEvents = retention.maxEvents, maxEvents > 0 { upTo = info.lastSeq - maxEvents }
            guard before != nil || upTo != nil else { continue }
            deleted += try await transaction { [before, upTo] db in
                try await db.query("SELECT 1 FROM streams WHERE name = \(info.name) FOR UPDATE", logger: logger)
                var count = 0
                var bytes: Int64 = 0
                for try await (n, b) in try await db.query(
                    """
                    WITH gone AS (
                        DELETE FROM events WHERE stream = \(info.name)
                        AND (published_at < \(before ?? Int64.min) OR seq <= \(upTo ?? Int64.min))
                        RETURNING octet_length(body) AS size
                    )
                    SELECT COUNT(*), COALESCE(SUM(size), 0)::bigint FROM gone
                    """, logger: logger
                ).decode((Int, Int64).self) {
                    count = n
                    bytes = b
                }
                if count > 0 {
                    try await db.query(
                        """
                        UPDATE streams SET bytes = bytes - \(bytes),
                            first_seq = COALESCE((SELECT MIN(seq) FROM events WHERE stream = \(info.name)), last_seq + 1)
                        WHERE name = \(info.name)
                        """, logger: logger)
                }
                return count
            }
        }
        _ = try await read { db in try await db.query("DELETE FROM publish_keys WHERE created_at < \(keysBefore)", logger: logger) }
        return deleted
    }

    /// The bytes of stored event bodies (what the size limit counts), twice: PostgreSQL's own
    /// overhead is its operator's to watch (`pg_database_size`).
    public func usage() async throws -> StoreUsage {
        let logger = logger
        let used = try await read { db in
            var used: Int64 = 0
            for try await total in try await db.query("SELECT COALESCE(SUM(bytes), 0)::bigint FROM streams", logger: logger).decode(Int64.self) {
                used = total
            }
            return used
        }
        return StoreUsage(usedBytes: used, allocatedBytes: used, maxBytes: maxBytes)
    }
}
