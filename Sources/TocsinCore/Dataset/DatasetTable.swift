/// One write to a dataset: a record to put (insert or replace by key) or a key to delete.
public enum DatasetWrite: Sendable, Hashable {
    case upsert(Record)
    case delete(key: Value)
}

/// What a write did to one key, for the dataset's change stream.
public struct DatasetChange: Sendable, Hashable {
    public var key: Value
    /// The record now stored, or nil when the key was deleted.
    public var record: Record?
}

/// A dataset's records in memory: the latest record per key, the version (every applied batch
/// adds one), and the indexes enrich clauses read (`PointGrid` per indexed geo field, a hash per
/// indexed equality field). The store keeps the durable copy; a broker rebuilds this from it.
/// Not thread-safe: its owner serialises access.
public struct DatasetTable: Sendable {
    public let definition: DatasetDefinition
    public private(set) var version: Int64
    /// Records by row number; a deleted record's row holds `[]` until it is reused (`free`).
    /// The indexes name rows, so a candidate costs an array read, not a hash of its key.
    private(set) var rows: [Record] = []
    private var rowOf: [Value: Int] = [:]
    private var free: [Int] = []
    private var grids: [Int: PointGrid] = [:]
    private var equality: [Int: [Value: Set<Int>]] = [:]
    /// The indexed slots, kept apart from the indexes: iterating `grids.keys` while mutating
    /// `grids` would copy every index on every write.
    private let geoSlots: [Int]
    private let equalitySlots: [Int]

    public init(definition: DatasetDefinition, version: Int64 = 0) {
        self.definition = definition
        self.version = version
        var geoSlots: [Int] = []
        var equalitySlots: [Int] = []
        for name in definition.indexed {
            let slot = definition.schema.slot(of: name)!
            if definition.schema.fields[slot].type == .geo {
                grids[slot] = PointGrid()
                geoSlots.append(slot)
            } else {
                equality[slot] = [:]
                equalitySlots.append(slot)
            }
        }
        self.geoSlots = geoSlots
        self.equalitySlots = equalitySlots
    }

    public var count: Int { rowOf.count }

    /// Every record by key (a copy: O(records); for tests and reloads, not per event).
    public var records: [Value: Record] { rowOf.mapValues { rows[$0] } }

    public func record(key: Value) -> Record? { rowOf[key].map { rows[$0] } }

    /// Reads one write from JSON: a record object to upsert, or `{"delete": key}`.
    /// Errors are `schema_violation` naming what is wrong.
    public func write(from json: JSONValue) throws(TocsinError) -> DatasetWrite {
        try DatasetTable.write(from: json, definition: definition).get()
    }

    /// `write(from:)` for a dataset with no table at hand (the HTTP API validates before storing).
    public static func write(from json: JSONValue, definition: DatasetDefinition) -> Result<DatasetWrite, TocsinError> {
        do throws(TocsinError) {
            if case .object(let o) = json, o.count == 1, let key = o["delete"] {
                let keyType = definition.schema.fields[definition.keySlot].type
                return .success(.delete(key: try checkedKey(Value(json: key, as: keyType, what: "the key to delete", code: .schemaViolation))))
            }
            let record = try definition.schema.record(from: json)
            _ = try checkedKey(record[definition.keySlot])
            return .success(.upsert(record))
        } catch {
            return .failure(error)
        }
    }

    /// `key`, unless it is text PostgreSQL cannot store (the character U+0000); refused on every
    /// store alike.
    public static func checkedKey(_ key: Value, code: TocsinError.Code = .schemaViolation) throws(TocsinError) -> Value {
        if case .string(let text) = key, text.utf8.contains(0) { throw TocsinError(code, "a record's key must not contain the character U+0000") }
        return key
    }

    /// Applies a batch as one write: every record was validated before (`write(from:)`), so the
    /// batch cannot fail half way. The table is then at `version` (a broker's table: the seq of
    /// the change stream's last event applied), or one more than before when none is given.
    @discardableResult
    public mutating func apply(_ writes: [DatasetWrite], version: Int64? = nil) -> [DatasetChange] {
        var changes: [DatasetChange] = []
        changes.reserveCapacity(writes.count)
        for write in writes {
            switch write {
            case .upsert(let record):
                let key = record[definition.keySlot]
                let row: Int
                if let existing = rowOf[key] {
                    row = existing
                    unindex(row, rows[row])
                    rows[row] = record
                } else if let reused = free.popLast() {
                    row = reused
                    rows[row] = record
                    rowOf[key] = row
                } else {
                    row = rows.count
                    rows.append(record)
                    rowOf[key] = row
                }
                index(row, record)
                changes.append(DatasetChange(key: key, record: record))
            case .delete(let key):
                if let row = rowOf.removeValue(forKey: key) {
                    unindex(row, rows[row])
                    rows[row] = []
                    free.append(row)
                }
                changes.append(DatasetChange(key: key, record: nil))
            }
        }
        self.version = version ?? self.version + 1
        return changes
    }

    /// Rows that may be within `radiusKm` of `centre` by the indexed geo field at `slot`.
    func candidates(geoSlot slot: Int, near centre: GeoPoint, radiusKm: Double, into out: inout [Int]) {
        grids[slot]?.candidates(near: centre, radiusKm: radiusKm, into: &out)
    }

    /// `candidates(geoSlot:…)` ring by ring outward (`PointGrid.rings`).
    func rings(geoSlot slot: Int, near centre: GeoPoint, radiusKm: Double, _ body: ([Int], Double) -> Bool) {
        grids[slot]?.rings(near: centre, radiusKm: radiusKm, body)
    }

    /// Rows whose indexed field at `slot` equals `value`.
    func rows(slot: Int, equalTo value: Value) -> Set<Int>? {
        equality[slot]?[value]
    }

    func isIndexed(slot: Int) -> Bool { grids[slot] != nil || equality[slot] != nil }

    private mutating func index(_ key: Int, _ record: Record) {
        for slot in geoSlots {
            if case .geo(let point) = record[slot] { grids[slot]!.insert(key, at: point) }
        }
        for slot in equalitySlots {
            let value = record[slot]
            if case .null = value { continue }
            equality[slot]![value, default: []].insert(key)
        }
    }

    private mutating func unindex(_ key: Int, _ record: Record) {
        for slot in geoSlots { grids[slot]!.remove(key) }
        for slot in equalitySlots {
            let value = record[slot]
            if case .null = value { continue }
            equality[slot]![value]?.remove(key)
            if equality[slot]![value]?.isEmpty == true { equality[slot]![value] = nil }
        }
    }
}
