import Foundation
import GRDB
public import TocsinCore

/// Streams: their definitions, epochs and seq ranges (`streams` table).
extension SQLiteStore {
    public func putStream(_ definition: StreamDefinition, recreate: Bool) async throws -> (StreamInfo, PutOutcome) {
        let text = StoredDefinition.text(definition)
        let result: (StreamInfo, PutOutcome) = try await write { db in
            let now = self.nowMillis()
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
        StreamInfo(
            definition: try StoredDefinition.stream(name: row["name"], text: row["definition"]),
            epoch: row["epoch"], lastSeq: row["last_seq"], firstSeq: row["first_seq"], createdAtMillis: row["created_at"])
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
}
