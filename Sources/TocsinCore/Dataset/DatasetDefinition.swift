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
