/// How long a stream keeps its events. Either bound may be absent; both apply when both are set.
public struct Retention: Sendable, Hashable, Codable {
    public var maxAgeSeconds: Int64?
    public var maxEvents: Int64?

    public init(maxAgeSeconds: Int64? = nil, maxEvents: Int64? = nil) {
        self.maxAgeSeconds = maxAgeSeconds
        self.maxEvents = maxEvents
    }
}

/// A durable, append-only log of typed events.
public struct StreamDefinition: Sendable, Hashable, Codable {
    public var name: String
    public var schema: StreamSchema
    public var retention: Retention

    public init(name: String, schema: StreamSchema, retention: Retention = Retention()) {
        self.name = name
        self.schema = schema
        self.retention = retention
    }

    enum CodingKeys: String, CodingKey { case name, fields, retention }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        schema = try c.decode(StreamSchema.self, forKey: .fields)
        retention = try c.decodeIfPresent(Retention.self, forKey: .retention) ?? Retention()
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(schema, forKey: .fields)
        try c.encode(retention, forKey: .retention)
    }
}

extension StreamDefinition {
    /// Reads a stream definition from the body of `PUT /v1/streams/{name}`:
    /// `{"fields": [{"name": "kind", "type": "string"}, ...], "retention": {"maxAgeSeconds": 86400, "maxEvents": 1000000}}`.
    public init(name: String, json: JSONValue) throws(TocsinError) {
        guard Identifier.isValidName(name) else {
            throw TocsinError(.invalidStream, "stream name '\(name)' must be 1-128 characters of letters, digits, '_', '-' or '.'")
        }
        guard case .object(let body) = json else {
            throw TocsinError(.invalidStream, "a stream definition must be a JSON object")
        }
        for key in body.keys where !["fields", "retention", "name"].contains(key) {
            throw TocsinError(.invalidStream, "unknown key '\(key)' in stream definition (expected fields, retention)")
        }
        guard case .array(let fieldsJSON)? = body["fields"] else {
            throw TocsinError(.invalidStream, "'fields' must be an array of {\"name\", \"type\", \"optional\"}")
        }
        var fields: [FieldSpec] = []
        for (i, f) in fieldsJSON.enumerated() {
            guard case .object(let o) = f, let fieldName = o["name"]?.stringValue, let typeName = o["type"]?.stringValue
            else {
                throw TocsinError(.invalidStream, "fields[\(i)] must be an object with string 'name' and 'type'")
            }
            guard let type = FieldType(rawValue: typeName) else {
                let known = FieldType.allCases.map(\.rawValue).joined(separator: ", ")
                throw TocsinError(.invalidStream, "fields[\(i)] ('\(fieldName)') has unknown type '\(typeName)'; known types: \(known)")
            }
            var optional = false
            if let opt = o["optional"] {
                guard case .bool(let b) = opt else {
                    throw TocsinError(.invalidStream, "fields[\(i)].optional must be a boolean")
                }
                optional = b
            }
            fields.append(FieldSpec(name: fieldName, type: type, optional: optional))
        }
        var retention = Retention()
        if let r = body["retention"], r != .null {
            guard case .object(let o) = r else {
                throw TocsinError(.invalidStream, "'retention' must be an object {\"maxAgeSeconds\", \"maxEvents\"}")
            }
            for (key, value) in o {
                guard let n = value.intValue, n > 0 else {
                    throw TocsinError(.invalidStream, "retention.\(key) must be a positive integer")
                }
                switch key {
                case "maxAgeSeconds": retention.maxAgeSeconds = n
                case "maxEvents": retention.maxEvents = n
                default: throw TocsinError(.invalidStream, "unknown key 'retention.\(key)' (expected maxAgeSeconds, maxEvents)")
                }
            }
        }
        self.init(name: name, schema: try StreamSchema(fields: fields), retention: retention)
    }
}
