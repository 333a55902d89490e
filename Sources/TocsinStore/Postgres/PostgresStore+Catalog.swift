import Foundation
import Logging
import PostgresNIO
public import TocsinCore

/// Streams and channels: their definitions, and streams' epochs and seq ranges. Every change
/// bumps `tocsin_meta.catalog_version` and notifies, so other brokers reload their catalogs.
extension PostgresStore {
    typealias StreamRow = (String, String, String, Int64, Int64, Int64)
    static let streamColumns = "name, definition, epoch, last_seq, first_seq, created_at"

    public func putStream(_ definition: StreamDefinition, recreate: Bool) async throws -> (StreamInfo, PutOutcome) {
        // Two processes creating one stream at once: the one that loses the insert finds the
        // other's row the second time round.
        do {
            return try await putStreamOnce(definition, recreate: recreate)
        } catch is CreatedMeanwhile {
            return try await putStreamOnce(definition, recreate: recreate)
        }
    }

    private struct CreatedMeanwhile: PassesThroughStore {}

    private func putStreamOnce(_ definition: StreamDefinition, recreate: Bool) async throws -> (StreamInfo, PutOutcome) {
        let text = StoredDefinition.text(definition)
        let now = nowMillis()
        let logger = logger
        let result: (StreamInfo, PutOutcome) = try await transaction { db in
            // Locked: appends to this stream wait until it is redefined.
            let rows = try await db.query(
                "SELECT name, definition, epoch, last_seq, first_seq, created_at FROM streams WHERE name = \(definition.name) FOR UPDATE",
                logger: logger)
            var stored: StreamRow?
            for try await row in rows.decode(StreamRow.self) { stored = row }
            var existing: StreamInfo?
            if let stored {
                existing = try? Self.streamInfo(stored)
                if existing == nil {
                    // Stored with a definition that cannot be read: only a recreate replaces it.
                    guard recreate else {
                        throw TocsinError(
                            .conflict,
                            "stream '\(definition.name)' exists with a stored definition this broker cannot read; PUT with ?recreate=true drops its events and starts a new epoch")
                    }
                }
            }
            if let existing, existing.definition.schema == definition.schema, !recreate {
                if existing.definition.retention == definition.retention { return (existing, .unchanged) }
                try await db.query("UPDATE streams SET definition = \(text) WHERE name = \(definition.name)", logger: logger)
                try await Self.notifyDefinitionsChanged(db, logger: logger)
                var updated = existing
                updated.definition = definition
                return (updated, .updated)
            }
            if existing != nil, !recreate {
                throw TocsinError(
                    .conflict,
                    "stream '\(definition.name)' exists with different fields; PUT with ?recreate=true drops its events and starts a new epoch")
            }
            let epoch = Self.newEpoch()
            if stored != nil {
                try await db.query("DELETE FROM events WHERE stream = \(definition.name)", logger: logger)
                try await db.query("DELETE FROM publish_keys WHERE stream = \(definition.name)", logger: logger)
                try await db.query(
                    """
                    UPDATE streams SET definition = \(text), epoch = \(epoch), last_seq = 0, first_seq = 1, bytes = 0, created_at = \(now)
                    WHERE name = \(definition.name)
                    """, logger: logger)
            } else {
                    let inserted = try await db.query(
                    """
                    INSERT INTO streams (name, definition, epoch, last_seq, first_seq, bytes, created_at)
                    VALUES (\(definition.name), \(text), \(epoch), 0, 1, 0, \(now)) ON CONFLICT (name) DO NOTHING RETURNING 1
                    """, logger: logger)
                var created = false
                for try await _ in inserted { created = true }
                guard created else { throw CreatedMeanwhile() }
            }
            try await Self.notifyDefinitionsChanged(db, logger: logger)
            return (
                StreamInfo(definition: definition, epoch: epoch, lastSeq: 0, firstSeq: 1, createdAtMillis: now),
                stored == nil ? .created : .recreated
            )
        }
        if result.1 == .recreated || result.1 == .created { changes.advance(stream: definition.name, epoch: result.0.epoch, to: 0) }
        return result
    }

    /// Streams whose stored definition cannot be read are left out, each logged once.
    public func streams() async throws -> [StreamInfo] {
        let logger = logger
        let rows = try await read { db in
            var rows: [StreamRow] = []
            for try await row in try await db.query(
                "SELECT name, definition, epoch, last_seq, first_seq, created_at FROM streams ORDER BY name", logger: logger
            ).decode(StreamRow.self) { rows.append(row) }
            return rows
        }
        return rows.compactMap(readable)
    }

    public func stream(named name: String) async throws -> StreamInfo? {
        let logger = logger
        let rows = try await read { db in
            var rows: [StreamRow] = []
            for try await row in try await db.query(
                "SELECT name, definition, epoch, last_seq, first_seq, created_at FROM streams WHERE name = \(name)", logger: logger
            ).decode(StreamRow.self) { rows.append(row) }
            return rows
        }
        return rows.first.flatMap(readable)
    }

    private func readable(_ row: StreamRow) -> StreamInfo? {
        do {
            return try Self.streamInfo(row)
        } catch {
            reportUnreadable(kind: "stream", name: row.0, text: row.1, error: error)
            return nil
        }
    }

    static func streamInfo(_ row: StreamRow) throws -> StreamInfo {
        StreamInfo(
            definition: try StoredDefinition.stream(name: row.0, text: row.1), epoch: row.2, lastSeq: row.3, firstSeq: row.4,
            createdAtMillis: row.5)
    }

    static func newEpoch() -> String {
        let millis = String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
        return "\(millis)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    }

    // MARK: Channels

    public func putChannel(_ definition: ChannelDefinition) async throws -> PutOutcome {
        let text = StoredDefinition.text(definition)
        let now = nowMillis()
        let logger = logger
        return try await transaction { db in
            // Locks the name (or, for a new channel, its would-be row through the insert below).
            var existing: String?
            for try await stored in try await db.query(
                "SELECT definition FROM channels WHERE name = \(definition.name) FOR UPDATE", logger: logger
            ).decode(String.self) { existing = stored }
            if existing == text { return .unchanged }
            if existing != nil {
                var used = 0
                for try await count in try await db.query(
                    "SELECT COUNT(*) FROM subscriptions WHERE channel = \(definition.name)", logger: logger
                ).decode(Int.self) { used = count }
                if used > 0 {
                    throw TocsinError(
                        .conflict,
                        "channel '\(definition.name)' has \(used) subscription(s); its definition cannot change under them. Define a new channel, or delete this one (which drops its subscriptions)")
                }
            }
            try await db.query(
                """
                INSERT INTO channels (name, stream, definition, created_at) VALUES (\(definition.name), \(definition.stream), \(text), \(now))
                ON CONFLICT (name) DO UPDATE SET stream = excluded.stream, definition = excluded.definition
                """, logger: logger)
            try await Self.notifyDefinitionsChanged(db, logger: logger)
            return existing == nil ? .created : .updated
        }
    }

    /// Channels whose stored definition cannot be read are left out, each logged once.
    public func channels() async throws -> [ChannelDefinition] {
        let logger = logger
        let rows = try await read { db in
            var rows: [(String, String)] = []
            for try await row in try await db.query("SELECT name, definition FROM channels ORDER BY name", logger: logger)
                .decode((String, String).self)
            { rows.append(row) }
            return rows
        }
        return rows.compactMap { name, text in
            do {
                return try StoredDefinition.channel(name: name, text: text)
            } catch {
                reportUnreadable(kind: "channel", name: name, text: text, error: error)
                return nil
            }
        }
    }

    public func deleteChannel(named name: String) async throws -> Bool {
        let logger = logger
        return try await transaction { db in
            try await db.query("DELETE FROM subscriptions WHERE channel = \(name)", logger: logger)
            var deleted = false
            for try await _ in try await db.query("DELETE FROM channels WHERE name = \(name) RETURNING 1", logger: logger) { deleted = true }
            if deleted { try await Self.notifyDefinitionsChanged(db, logger: logger) }
            return deleted
        }
    }
}
