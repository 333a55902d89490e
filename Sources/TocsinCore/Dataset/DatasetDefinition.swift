/// A dataset: a durable keyed table of the latest record per key, beside the streams
/// (`shelters`, `hospitals`, `userLocations`). Channels read it in `enrich` clauses.
public struct DatasetDefinition: Sendable, Hashable {
    /// An identifier, since enrich clauses name it in expressions (`shelters.location`).
    public var name: String
    /// The records' typed fields (the stream field types).
    public var schema: StreamSchema
    /// The field that identifies a record: required, of type string or int.
    public var key: String
    /// Fields with an index: geo fields (radius queries) and string, int or bool fields
    /// (equality). Enrich clauses must use one (`EnrichPlan`).
    public var indexed: [String]

    /// The most fields an index list may name.
    public static let maxIndexes = 8

    public init(name: String, schema: StreamSchema, key: String, indexed: [String] = []) throws(TocsinError) {
        guard Identifier.isValid(name), name.utf8.count <= 128 else {
            throw TocsinError(.invalidDataset, "dataset name '\(name.prefix(130))' must be an identifier of at most 128 characters (letters, digits, '_'; not starting with a digit), since channels name it in expressions")
        }
        guard schema.field(named: DatasetDefinition.changeField) == nil else {
            throw TocsinError(.invalidDataset, "'\(DatasetDefinition.changeField)' cannot be a field: the dataset's change stream uses it to say what changed (upsert or delete)")
        }
        guard let keyField = schema.field(named: key) else {
            throw TocsinError(.invalidDataset, "key '\(key)' is not a field (fields: \(schema.fields.map(\.name).joined(separator: ", ")))")
        }
        guard keyField.type == .string || keyField.type == .int, !keyField.optional else {
            throw TocsinError(.invalidDataset, "key '\(key)' must be a required string or int field, but it is \(keyField.optional ? "optional " : "")\(keyField.type.rawValue)")
        }
        guard indexed.count <= DatasetDefinition.maxIndexes else {
            throw TocsinError(.invalidDataset, "at most \(DatasetDefinition.maxIndexes) fields can be indexed, got \(indexed.count)")
        }
        var seen = Set<String>()
        for field in indexed {
            guard let spec = schema.field(named: field) else {
                throw TocsinError(.invalidDataset, "index names '\(field.prefix(130))', which is not a field")
            }
            guard [.geo, .string, .int, .bool].contains(spec.type) else {
                throw TocsinError(.invalidDataset, "field '\(field)' is \(spec.type.rawValue); only geo (radius) and string, int or bool (equality) fields can be indexed")
            }
            guard seen.insert(field).inserted else {
                throw TocsinError(.invalidDataset, "field '\(field)' is indexed twice")
            }
        }
        self.name = name
        self.schema = schema
        self.key = key
        self.indexed = indexed
    }

    /// The key field's slot in a record.
    public var keySlot: Int { schema.slot(of: key)! }
}

extension DatasetDefinition {
    /// Reads the body of `PUT /v1/datasets/{name}`:
    /// `{"fields": [{"name", "type", "optional"?}], "key": "id", "index": ["location", "open"]}`.
    public init(name: String, json: JSONValue) throws(TocsinError) {
        guard case .object(let body) = json else {
            throw TocsinError(.invalidDataset, "a dataset definition must be a JSON object")
        }
        for key in body.keys.sorted() where !["name", "fields", "key", "index"].contains(key) {
            throw TocsinError(.invalidDataset, "unknown key '\(key.prefix(80))' in dataset definition (expected fields, key, index)")
        }
        let fields = try FieldSpec.list(from: body["fields"], code: .invalidDataset)
        let schema: StreamSchema
        do {
            schema = try StreamSchema(fields: fields)
        } catch {
            throw TocsinError(.invalidDataset, error.message)
        }
        guard let key = body["key"]?.stringValue else {
            throw TocsinError(.invalidDataset, "'key' must name the field that identifies a record")
        }
        var indexed: [String] = []
        if let index = body["index"], index != .null {
            guard case .array(let items) = index else {
                throw TocsinError(.invalidDataset, "'index' must be an array of field names")
            }
            for item in items {
                guard let name = item.stringValue else {
                    throw TocsinError(.invalidDataset, "'index' must be an array of field names")
                }
                indexed.append(name)
            }
        }
        try self.init(name: name, schema: schema, key: key, indexed: indexed)
    }

    /// The JSON form used by the HTTP API and the store.
    public var json: JSONValue {
        .object([
            "name": .string(name),
            "fields": .array(
                schema.fields.map { f in
                    var o: [String: JSONValue] = ["name": .string(f.name), "type": .string(f.type.rawValue)]
                    if f.optional { o["optional"] = .bool(true) }
                    return .object(o)
                }),
            "key": .string(key),
            "index": .array(indexed.map { .string($0) }),
        ])
    }
}

/// Every dataset has a change stream, `<name>.changes`: one event per record written, in the
/// order the writes were applied, appended in the same transaction as the write. Its fields are
/// the dataset's (all optional but the key) and `change`, `"upsert"` or `"delete"` (a delete
/// carries only the key). Channels can watch it like any stream ("a shelter opened near
/// you"); only dataset writes append to it. A dataset's version is the seq of its change
/// stream's newest event, so a version names exactly which writes a reader had seen.
extension DatasetDefinition {
    /// The field of a change event that says what changed; no dataset may have a field so named.
    public static let changeField = "change"
    /// How every change stream's name ends; no other stream may be so named.
    public static let changeStreamSuffix = ".changes"
    /// How long change streams keep events: long enough for any broker to catch up with
    /// the dataset after a restart, short enough that a dataset written constantly (phones'
    /// locations) does not fill the store.
    public static let changeRetention = Retention(maxAgeSeconds: 86_400)

    public var changeStreamName: String { name + Self.changeStreamSuffix }

    /// Whether `stream` is (or would be) a dataset's change stream: only dataset writes append to it.
    public static func isChangeStream(_ stream: String) -> Bool { stream.hasSuffix(changeStreamSuffix) }

    /// The change stream's definition.
    public var changeStream: StreamDefinition {
        var fields = schema.fields.map { f in FieldSpec(name: f.name, type: f.type, optional: f.name != key) }
        fields.append(FieldSpec(name: Self.changeField, type: .string, optional: false))
        // The dataset's fields are distinct and not `change`, so the schema is valid.
        return StreamDefinition(name: changeStreamName, schema: try! StreamSchema(fields: fields), retention: Self.changeRetention)
    }

    /// The change event (canonical JSON of the change stream) that records `write`.
    public func changeEvent(_ write: DatasetWrite) -> String {
        var record = Record(repeating: .null, count: schema.fields.count + 1)
        switch write {
        case .upsert(let values):
            for (i, v) in values.enumerated() { record[i] = v }
            record[schema.fields.count] = .string("upsert")
        case .delete(let key):
            record[keySlot] = key
            record[schema.fields.count] = .string("delete")
        }
        return changeStream.schema.json(of: record)
    }

    /// The write a change event records (its record as the change stream's schema read it).
    /// nil for an event that is not a change (an unknown `change`), which readers skip.
    public func write(fromChange record: Record) -> DatasetWrite? {
        guard record.count == schema.fields.count + 1 else { return nil }
        switch record[schema.fields.count] {
        case .string("upsert"): return .upsert(Array(record.prefix(schema.fields.count)))
        case .string("delete"): return .delete(key: record[keySlot])
        default: return nil
        }
    }
}
