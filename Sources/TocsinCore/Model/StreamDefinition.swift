/// How long a stream keeps its events. Either bound may be absent; both apply when both are set.
public struct Retention: Sendable, Hashable, Codable {
    public var maxAgeSeconds: Int64?
    public var maxEvents: Int64?
    /// What a publish to the stream does when the store has no room left.
    public var whenFull: WhenFull = .refuse

    public enum WhenFull: String, Sendable, Hashable, Codable, CaseIterable {
        /// The publish fails with `store_full`; nothing stored is lost (the default).
        case refuse
        /// The stream's oldest events are deleted to make room, and the publish is stored: new
        /// events win over history. Subscribers that had not received the deleted events resume
        /// with `recovered: false`.
        case dropOldest
    }

    /// The largest `maxAgeSeconds` a definition may give: 100 years (of 365 days).
    public static let maxAgeSecondsLimit: Int64 = 100 * 365 * 86_400
    /// The largest `maxEvents` a definition may give: 10^12.
    public static let maxEventsLimit: Int64 = 1_000_000_000_000

    public init(maxAgeSeconds: Int64? = nil, maxEvents: Int64? = nil, whenFull: WhenFull = .refuse) {
        self.maxAgeSeconds = maxAgeSeconds
        self.maxEvents = maxEvents
        self.whenFull = whenFull
    }

    enum CodingKeys: String, CodingKey { case maxAgeSeconds, maxEvents, whenFull }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        maxAgeSeconds = try c.decodeIfPresent(Int64.self, forKey: .maxAgeSeconds)
        maxEvents = try c.decodeIfPresent(Int64.self, forKey: .maxEvents)
        whenFull = try c.decodeIfPresent(WhenFull.self, forKey: .whenFull) ?? .refuse
    }

    /// `whenFull` only when it is not the default, so definitions stored before it existed and
    /// those that do not use it read the same.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(maxAgeSeconds, forKey: .maxAgeSeconds)
        try c.encodeIfPresent(maxEvents, forKey: .maxEvents)
        if whenFull != .refuse { try c.encode(whenFull, forKey: .whenFull) }
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
            throw TocsinError(.invalidStream, "stream name '\(name)' must be 1-128 characters of letters, digits, '_', '-' or '.', other than '.' and '..'")
        }
        guard !DatasetDefinition.isChangeStream(name) else {
            throw TocsinError(.invalidStream, "stream name '\(name)' ends in '\(DatasetDefinition.changeStreamSuffix)', which only datasets' change streams do (a dataset makes its own)")
        }
        guard case .object(let body) = json else {
            throw TocsinError(.invalidStream, "a stream definition must be a JSON object")
        }
        for key in body.keys where !["fields", "retention", "name"].contains(key) {
            throw TocsinError(.invalidStream, "unknown key '\(key)' in stream definition (expected fields, retention)")
        }
        let fields = try FieldSpec.list(from: body["fields"], code: .invalidStream)
        var retention = Retention()
        if let r = body["retention"], r != .null {
            guard case .object(let o) = r else {
                throw TocsinError(.invalidStream, "'retention' must be an object {\"maxAgeSeconds\", \"maxEvents\", \"whenFull\"}")
            }
            for (key, value) in o.sorted(by: { $0.key < $1.key }) {
                switch key {
                case "maxAgeSeconds", "maxEvents":
                    let limit = key == "maxAgeSeconds" ? Retention.maxAgeSecondsLimit : Retention.maxEventsLimit
                    guard let n = value.intValue, n > 0, n <= limit else {
                        let what = key == "maxAgeSeconds" ? "\(limit) (100 years)" : "\(limit)"
                        throw TocsinError(
                            .invalidStream, "retention.\(key) must be a positive integer of at most \(what), got \(value.serialized.prefix(40))")
                    }
                    if key == "maxAgeSeconds" { retention.maxAgeSeconds = n } else { retention.maxEvents = n }
                case "whenFull":
                    guard let text = value.stringValue, let policy = Retention.WhenFull(rawValue: text) else {
                        throw TocsinError(.invalidStream, "retention.whenFull must be \"refuse\" or \"dropOldest\"")
                    }
                    retention.whenFull = policy
                default:
                    throw TocsinError(.invalidStream, "unknown key 'retention.\(key)' (expected maxAgeSeconds, maxEvents, whenFull)")
                }
            }
        }
        self.init(name: name, schema: try StreamSchema(fields: fields), retention: retention)
    }
}

extension FieldSpec {
    /// Reads the `fields` of a stream or dataset definition: `[{"name", "type", "optional"?}]`.
    /// Errors carry `code`.
    static func list(from json: JSONValue?, code: TocsinError.Code) throws(TocsinError) -> [FieldSpec] {
        guard case .array(let fieldsJSON)? = json else {
            throw TocsinError(code, "'fields' must be an array of {\"name\", \"type\", \"optional\"}")
        }
        var fields: [FieldSpec] = []
        for (i, f) in fieldsJSON.enumerated() {
            guard case .object(let o) = f, let fieldName = o["name"]?.stringValue, let typeName = o["type"]?.stringValue
            else {
                throw TocsinError(code, "fields[\(i)] must be an object with string 'name' and 'type'")
            }
            guard let type = FieldType(rawValue: typeName) else {
                let known = FieldType.allCases.map(\.rawValue).joined(separator: ", ")
                throw TocsinError(code, "fields[\(i)] ('\(fieldName)') has unknown type '\(typeName)'; known types: \(known)")
            }
            var optional = false
            if let opt = o["optional"] {
                guard case .bool(let b) = opt else {
                    throw TocsinError(code, "fields[\(i)].optional must be a boolean")
                }
                optional = b
            }
            fields.append(FieldSpec(name: fieldName, type: type, optional: optional))
        }
        return fields
    }
}
