import GRDB
public import TocsinCore

/// Datasets (`datasets`, `dataset_records`). Keys are compared as bytes (SQLite's default
/// BINARY collation), so pages come in the same order on every store.
extension SQLiteStore {
    public func putDataset(_ definition: DatasetDefinition) async throws -> PutOutcome {
        let text = definition.json.serialized
        return try await write { db in
            let existing = try String.fetchOne(db, sql: "SELECT definition FROM datasets WHERE name = ?", arguments: [definition.name])
            if existing == text { return .unchanged }
            if existing != nil {
                let held = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM dataset_records WHERE dataset = ?", arguments: [definition.name]) ?? 0
                if held > 0 { throw DatasetRules.redefinitionConflict(definition.name, held: held) }
            }
            try db.execute(
                sql: """
                    INSERT INTO datasets (name, definition, created_at) VALUES (?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET definition = excluded.definition
                    """,
                arguments: [definition.name, text, self.nowMillis()])
            let version = try Int64.fetchOne(db, sql: "SELECT version FROM datasets WHERE name = ?", arguments: [definition.name]) ?? 0
            try Self.putChangeStream(db, of: definition, version: version)
            return existing == nil ? .created : .updated
        }
    }

    /// Datasets whose stored definition cannot be read are left out, each logged once.
    public func datasets() async throws -> [DatasetInfo] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT name, definition, version, (SELECT COUNT(*) FROM dataset_records r WHERE r.dataset = d.name) AS count
                    FROM datasets d ORDER BY name
                    """
            ).compactMap { row in
                let name: String = row["name"]
                let text: String = row["definition"]
                do {
                    let definition = try DatasetRules.definition(name: name, text: text)
                    return DatasetInfo(definition: definition, version: row["version"], count: row["count"])
                } catch {
                    self.reportUnreadable(kind: "dataset", name: name, text: text, error: error)
                    return nil
                }
            }
        }
    }

    public func deleteDataset(named name: String) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM dataset_records WHERE dataset = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM datasets WHERE name = ?", arguments: [name])
            let deleted = db.changesCount > 0
            if deleted {
                let changes = name + DatasetDefinition.changeStreamSuffix
                try db.execute(sql: "DELETE FROM streams WHERE name = ?", arguments: [changes])
                try Self.deleteHistory(db, stream: changes)
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
        try await pool.read { db in
            guard let version = try Int64.fetchOne(db, sql: "SELECT version FROM datasets WHERE name = ?", arguments: [name]) else {
                throw DatasetRules.unknown(name)
            }
            let rows = try Row.fetchAll(
                db, sql: "SELECT key, body FROM dataset_records WHERE dataset = ? AND key > ? ORDER BY key LIMIT ?",
                arguments: [name, afterKey ?? "", max(0, limit)])
            return DatasetPage(version: version, records: rows.map { DatasetPage.Row(key: $0["key"], body: $0["body"]) })
        }
    }
}

/// A dataset write riding on the append of its change events: applied inside the append's
/// transaction, after the change stream's row was read, so records, version and change events
/// commit together or not at all.
struct DatasetApply: Sendable {
    var name: String
    var writes: [DatasetRecordWrite]

    /// Appends `writes`' change events to the dataset's change stream with `append` (a store's
    /// group committer, which applies the writes in the same transaction); the dataset's new
    /// version (the last change event's seq).
    static func write(
        _ name: String, _ writes: [DatasetRecordWrite],
        append: (_ stream: String, _ events: [String], _ dataset: DatasetApply) async throws -> Appended
    ) async throws -> Int64 {
        guard !writes.isEmpty else { throw TocsinError(.badRequest, "a dataset write needs at least one record") }
        let appended = try await append(name + DatasetDefinition.changeStreamSuffix, writes.map(\.change), DatasetApply(name: name, writes: writes))
        return appended.seqs.last!
    }

    /// The last write to each key, in first-write order: what the batch leaves behind.
    var net: [DatasetRecordWrite] {
        var last: [String: Int] = [:]
        for (i, w) in writes.enumerated() { last[w.key] = i }
        return writes.enumerated().filter { last[$0.element.key] == $0.offset }.map(\.element)
    }

    /// Sets the version and applies the writes; false (nothing done) if there is no such dataset.
    func apply(_ db: Database, version: Int64) throws -> Bool {
        try db.cachedStatement(sql: "UPDATE datasets SET version = ? WHERE name = ?").execute(arguments: [version, name])
        guard db.changesCount > 0 else { return false }
        let upsert = try db.cachedStatement(
            sql: "INSERT INTO dataset_records (dataset, key, body) VALUES (?, ?, ?) ON CONFLICT (dataset, key) DO UPDATE SET body = excluded.body")
        let delete = try db.cachedStatement(sql: "DELETE FROM dataset_records WHERE dataset = ? AND key = ?")
        for w in writes {
            if let body = w.body {
                try upsert.execute(arguments: [name, w.key, body])
            } else {
                try delete.execute(arguments: [name, w.key])
            }
        }
        return true
    }
}

/// What every store says the same way about datasets.
enum DatasetRules {
    static func redefinitionConflict(_ name: String, held: Int) -> TocsinError {
        TocsinError(
            .conflict,
            "dataset '\(name)' holds \(held) record(s); its definition cannot change under them. Define a new dataset, or delete this one (which drops its records)")
    }

    static func unknown(_ name: String) -> TocsinError {
        TocsinError(.unknownDataset, "no dataset named '\(name.prefix(130))'")
    }

    static func definition(name: String, text: String) throws -> DatasetDefinition {
        try DatasetDefinition(name: name, json: try JSONValue.parse(text))
    }
}
