import PostgresNIO
public import TocsinCore

/// Datasets (`datasets`, `dataset_records`). Keys use the "C" collation, so pages come in byte
/// order, as on SQLite.
extension PostgresStore {
    public func putDataset(_ definition: DatasetDefinition) async throws -> PutOutcome {
        let text = definition.json.serialized
        let now = nowMillis()
        let logger = logger
        return try await transaction { db in
            var existing: String?
            for try await stored in try await db.query(
                "SELECT definition FROM datasets WHERE name = \(definition.name) FOR UPDATE", logger: logger
            ).decode(String.self) { existing = stored }
            if existing == text { return .unchanged }
            if existing != nil {
                var held = 0
                for try await count in try await db.query(
                    "SELECT COUNT(*) FROM dataset_records WHERE dataset = \(definition.name)", logger: logger
                ).decode(Int.self) { held = count }
                if held > 0 { throw DatasetRules.redefinitionConflict(definition.name, held: held) }
            }
            try await db.query(
                """
                INSERT INTO datasets (name, definition, created_at) VALUES (\(definition.name), \(text), \(now))
                ON CONFLICT (name) DO UPDATE SET definition = excluded.definition
                """, logger: logger)
            var version: Int64 = 0
            for try await v in try await db.query("SELECT version FROM datasets WHERE name = \(definition.name)", logger: logger)
                .decode(Int64.self) { version = v }
            try await Self.putChangeStream(db, of: definition, version: version, logger: logger)
            try await Self.notifyDefinitionsChanged(db, logger: logger)
            return existing == nil ? .created : .updated
        }
    }

    /// Datasets whose stored definition cannot be read are left out, each logged once.
    public func datasets() async throws -> [DatasetInfo] {
        let logger = logger
        let rows = try await read { db in
            var rows: [(String, String, Int64, Int64)] = []
            for try await row in try await db.query(
                """
                SELECT name, definition, version, (SELECT COUNT(*) FROM dataset_records r WHERE r.dataset = d.name)
                FROM datasets d ORDER BY name
                """, logger: logger
            ).decode((String, String, Int64, Int64).self) { rows.append(row) }
            return rows
        }
        return rows.compactMap { name, text, version, count in
            do {
                return DatasetInfo(definition: try DatasetRules.definition(name: name, text: text), version: version, count: count)
            } catch {
                reportUnreadable(kind: "dataset", name: name, text: text, error: error)
                return nil
            }
        }
    }

    public func deleteDataset(named name: String) async throws -> Bool {
        let logger = logger
        return try await transaction { db in
            try await db.query("DELETE FROM dataset_records WHERE dataset = \(name)", logger: logger)
            var deleted = false
            for try await _ in try await db.query("DELETE FROM datasets WHERE name = \(name) RETURNING 1", logger: logger) { deleted = true }
            if deleted {
                let changes = name + DatasetDefinition.changeStreamSuffix
                try await db.query("DELETE FROM events WHERE stream = \(changes)", logger: logger)
                try await db.query("DELETE FROM publish_keys WHERE stream = \(changes)", logger: logger)
                try await db.query("DELETE FROM streams WHERE name = \(changes)", logger: logger)
                try await Self.notifyDefinitionsChanged(db, logger: logger)
            }
            return deleted
        }
    }

    /// An append of the change events, through the group committer, which applies the writes
    /// to the records in the same transaction (`DatasetApply`).
    public func writeDataset(_ name: String, writes: [DatasetRecordWrite]) async throws -> Int64 {
        try await DatasetApply.write(name, writes) { try await committer.append(stream: $0, events: $1, key: nil, dataset: $2) }
    }

    public func readDataset(_ name: String, afterKey: String?, limit: Int) async throws -> DatasetPage {
        let logger = logger
        let after = afterKey ?? ""
        let limit = max(0, limit)
        return try await transaction { db in  // one snapshot for the version and the rows
            try await db.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", logger: logger)
            var version: Int64?
            for try await v in try await db.query("SELECT version FROM datasets WHERE name = \(name)", logger: logger).decode(Int64.self) {
                version = v
            }
            guard let version else { throw DatasetRules.unknown(name) }
            var rows: [DatasetPage.Row] = []
            for try await (key, body) in try await db.query(
                "SELECT key, body FROM dataset_records WHERE dataset = \(name) AND key > \(after) ORDER BY key LIMIT \(limit)", logger: logger
            ).decode((String, String).self) { rows.append(DatasetPage.Row(key: key, body: body)) }
            return DatasetPage(version: version, records: rows)
        }
    }
}
