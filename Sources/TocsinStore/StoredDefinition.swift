import TocsinCore

/// How a store keeps stream and channel definitions: the JSON form of the HTTP API
/// (`{"name", "fields", "retention"}` for a stream, `ChannelDefinition.json` for a channel),
/// compact with sorted keys. Every store writes and reads definitions through here, so there is
/// one stored form. (A stream's text is the one earlier versions wrote through `Codable`.)
///
/// Reading is lenient where the API is strict: a stream stored under older rules (a retention
/// beyond today's limits) still reads, and the store's users guard their arithmetic; what does
/// not read at all is reported by the store and left out.
public enum StoredDefinition {
    public static func text(_ definition: StreamDefinition) -> String {
        var retention: [String: JSONValue] = [:]
        if let age = definition.retention.maxAgeSeconds { retention["maxAgeSeconds"] = .int(age) }
        if let count = definition.retention.maxEvents { retention["maxEvents"] = .int(count) }
        // Only when not the default, so definitions stored before it existed read the same.
        if definition.retention.whenFull != .refuse { retention["whenFull"] = .string(definition.retention.whenFull.rawValue) }
        let fields = definition.schema.fields.map { field -> JSONValue in
            .object(["name": .string(field.name), "type": .string(field.type.rawValue), "optional": .bool(field.optional)])
        }
        return JSONValue.object(["name": .string(definition.name), "fields": .array(fields), "retention": .object(retention)]).serialized
    }

    public static func text(_ definition: ChannelDefinition) -> String {
        definition.json.serialized
    }

    /// The stream stored as `text` under `name`.
    public static func stream(name: String, text: String) throws -> StreamDefinition {
        guard case .object(let body) = try JSONValue.parse(text) else { throw unreadable("a stream definition is not a JSON object") }
        guard case .array(let list)? = body["fields"] else { throw unreadable("a stream definition has no fields") }
        var fields: [FieldSpec] = []
        for field in list {
            guard let fieldName = field["name"]?.stringValue, let typeName = field["type"]?.stringValue else {
                throw unreadable("a field has no name or type")
            }
            guard let type = FieldType(rawValue: typeName) else { throw unreadable("field '\(fieldName)' has unknown type '\(typeName)'") }
            var optional = false
            if let flag = field["optional"], flag != .null {
                guard case .bool(let value) = flag else { throw unreadable("field '\(fieldName)' has a non-boolean 'optional'") }
                optional = value
            }
            fields.append(FieldSpec(name: fieldName, type: type, optional: optional))
        }
        var retention = Retention()
        if case .object(let stored)? = body["retention"] {
            retention.maxAgeSeconds = try stored["maxAgeSeconds"].flatMap(nonNull).map { value in
                guard let seconds = value.intValue else { throw unreadable("retention.maxAgeSeconds is not an integer") }
                return seconds
            }
            retention.maxEvents = try stored["maxEvents"].flatMap(nonNull).map { value in
                guard let count = value.intValue else { throw unreadable("retention.maxEvents is not an integer") }
                return count
            }
            if let policy = stored["whenFull"].flatMap(nonNull) {
                guard let text = policy.stringValue, let whenFull = Retention.WhenFull(rawValue: text) else {
                    throw unreadable("retention.whenFull is not a known policy")
                }
                retention.whenFull = whenFull
            }
        }
        return StreamDefinition(name: name, schema: try StreamSchema(fields: fields), retention: retention)
    }

    /// The channel stored as `text` under `name` (checked as the API checks it).
    public static func channel(name: String, text: String) throws -> ChannelDefinition {
        try ChannelDefinition(name: name, json: try JSONValue.parse(text))
    }

    /// Absent and null read alike, as `Codable` read them.
    private static func nonNull(_ value: JSONValue) -> JSONValue? { value == .null ? nil : value }

    private static func unreadable(_ what: String) -> TocsinError {
        TocsinError(.internalError, "stored definition cannot be read: \(what)")
    }
}
