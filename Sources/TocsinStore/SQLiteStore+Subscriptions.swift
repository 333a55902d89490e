import Foundation
import GRDB
public import TocsinCore

/// Durable subscriptions and their acknowledged positions (`subscriptions` table).
extension SQLiteStore {
    public func openSubscription(
        client: String, channel: String, params: [String: JSONValue], initial: StreamPosition, maxPerClient: Int?
    ) async throws -> (SubscriptionRecord, created: Bool) {
        let paramsText = JSONValue.object(params).serialized
        // Resuming (the common case: every reconnect) only reads; the write lock, which brokers
        // sharing the file contend for, is taken only to create.
        // Statements every subscribe or hello runs are prepared once per connection (cachedSQL).
        let existing = try await pool.read { db in
            try Row.fetchOne(
                db, cachedSQL: "SELECT * FROM subscriptions WHERE client = ? AND channel = ? AND params = ?",
                arguments: [client, channel, paramsText]
            ).map(Self.subscription)
        }
        if let existing { return (existing, false) }
        // Many clients subscribe at once after a broker restarts or fails over: their creations
        // share transactions (and syncs) instead of taking one each.
        return try await batchedWrite { db in
            if let row = try Row.fetchOne(
                db, cachedSQL: "SELECT * FROM subscriptions WHERE client = ? AND channel = ? AND params = ?",
                arguments: [client, channel, paramsText])
            {
                return (try Self.subscription(row), false)
            }
            if let maxPerClient {
                // Only when creating (resuming is the common case), through the (client, …) index.
                let held = try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM subscriptions WHERE client = ?"), arguments: [client]) ?? 0
                if held >= maxPerClient { throw TocsinError.tooManySubscriptions(client: client, held: held, limit: maxPerClient) }
            }
            let id = Self.newSubscriptionID()
            try db.cachedStatement(
                sql: "INSERT INTO subscriptions (id, client, channel, params, epoch, acked_seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ).execute(arguments: [id, client, channel, paramsText, initial.epoch, initial.seq, self.nowMillis()])
            return (
                SubscriptionRecord(id: id, client: client, channel: channel, params: params, epoch: initial.epoch, ackedSeq: initial.seq),
                true
            )
        }
    }

    public func subscriptions(client: String) async throws -> [SubscriptionRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, cachedSQL: "SELECT * FROM subscriptions WHERE client = ? ORDER BY created_at, id", arguments: [client])
                .map(Self.subscription)
        }
    }

    public func subscription(id: String) async throws -> SubscriptionRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, cachedSQL: "SELECT * FROM subscriptions WHERE id = ?", arguments: [id]).map(Self.subscription)
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

    static func newSubscriptionID() -> String {
        "s_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
    }
}
