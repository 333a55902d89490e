import GRDB
public import TocsinCore

/// Channels (`channels` table). Deleting one drops its subscriptions.
extension SQLiteStore {
    public func putChannel(_ definition: ChannelDefinition) async throws -> PutOutcome {
        let text = StoredDefinition.text(definition)
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
                arguments: [definition.name, definition.stream, text, self.nowMillis()])
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
                    return try StoredDefinition.channel(name: name, text: text)
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
}
