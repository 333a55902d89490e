import Foundation

/// An event's field values in schema order: `record[i]` is the value of `schema.fields[i]`,
/// `.null` for an optional field the event left out. Compiled expressions address fields by slot.
public typealias Record = [Value]

public struct FieldSpec: Sendable, Hashable, Codable {
    public var name: String
    public var type: FieldType
    /// Optional fields may be missing from an event (they read as null).
    public var optional: Bool

    public init(name: String, type: FieldType, optional: Bool = false) {
        self.name = name
        self.type = type
        self.optional = optional
    }

    enum CodingKeys: String, CodingKey { case name, type, optional }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        type = try c.decode(FieldType.self, forKey: .type)
        optional = try c.decodeIfPresent(Bool.self, forKey: .optional) ?? false
    }
}

/// The typed fields of a stream's events.
public struct StreamSchema: Sendable, Hashable {
    public private(set) var fields: [FieldSpec]
    private var slots: [String: Int]

    public init(fields: [FieldSpec]) throws(TocsinError) {
        self.fields = fields
        self.slots = [:]
        if fields.isEmpty {
            throw TocsinError(.invalidStream, "a stream needs at least one field")
        }
        for (i, field) in fields.enumerated() {
            guard Identifier.isValid(field.name) else {
                throw TocsinError(.invalidStream, "field name '\(field.name)' is not an identifier (letters, digits, '_'; not starting with a digit)")
            }
            guard slots.updateValue(i, forKey: field.name) == nil else {
                throw TocsinError(.invalidStream, "field '\(field.name)' is defined twice")
            }
        }
    }

    /// The slot of a field in a `Record`.
    public func slot(of name: String) -> Int? { slots[name] }

    public func field(named name: String) -> FieldSpec? { slots[name].map { fields[$0] } }
}

extension StreamSchema: Codable {
    public init(from decoder: any Decoder) throws {
        try self.init(fields: try [FieldSpec](from: decoder))
    }

    public func encode(to encoder: any Encoder) throws {
        try fields.encode(to: encoder)
    }
}

extension StreamSchema {
    /// Checks a JSON object against the schema and converts it to a record.
    /// Unknown fields, missing required fields and values of the wrong type are errors.
    public func record(from json: JSONValue) throws(TocsinError) -> Record {
        guard case .object(let object) = json else {
            throw TocsinError(.schemaViolation, "an event must be a JSON object, got \(json.kindName)")
        }
        var record = Record(repeating: .null, count: fields.count)
        for (key, value) in object {
            guard let slot = slots[key] else {
                throw TocsinError(.schemaViolation, "unknown field '\(key)'")
            }
            let field = fields[slot]
            if case .null = value {
                guard field.optional else {
                    throw TocsinError(.schemaViolation, "field '\(key)' is required and may not be null")
                }
                continue
            }
            record[slot] = try Value(json: value, as: field.type, what: "field '\(key)'", code: .schemaViolation)
        }
        for (i, field) in fields.enumerated() where !field.optional {
            if case .null = record[i] {
                throw TocsinError(.schemaViolation, "missing required field '\(field.name)' (\(field.type.rawValue))")
            }
        }
        return record
    }

    /// The canonical JSON of a record: fields in schema order, optional nulls left out.
    public func json(of record: Record) -> String {
        var out = "{"
        var first = true
        for (i, field) in fields.enumerated() {
            let value = record[i]
            if case .null = value { continue }
            if !first { out += "," }
            first = false
            JSONWriter.writeString(field.name, into: &out)
            out += ":"
            value.writeJSON(into: &out)
        }
        out += "}"
        return out
    }
}

extension Value {
    /// Converts JSON to a value of the given type, or throws an error naming `what` was wrong.
    public init(json: JSONValue, as type: FieldType, what: String, code: TocsinError.Code) throws(TocsinError) {
        func mismatch() -> TocsinError {
            TocsinError(code, "\(what) must be \(type.articleName), got \(json.kindName)")
        }
        switch type {
        case .string:
            guard case .string(let s) = json else { throw mismatch() }
            self = .string(s)
        case .int:
            guard let i = json.intValue else { throw mismatch() }
            self = .int(i)
        case .double:
            guard let d = json.doubleValue, d.isFinite else { throw mismatch() }
            self = .double(d)
        case .bool:
            guard case .bool(let b) = json else { throw mismatch() }
            self = .bool(b)
        case .time:
            switch json {
            case .int, .double:
                guard let ms = json.intValue else {
                    throw TocsinError(code, "\(what) must be a time: an RFC 3339 string or whole milliseconds, got \(json.serialized.prefix(80))")
                }
                guard TimeFormat.supportedRange.contains(ms) else {
                    throw TocsinError(code, "\(what) is out of range: times must be \(TimeFormat.rangeDescription), got \(ms)")
                }
                self = .time(ms)
            case .string(let s):
                switch TimeFormat.check(s) {
                case .success(let ms): self = .time(ms)
                case .failure(let problem):
                    throw TocsinError(code, "\(what) is \(problem), got '\(s.prefix(80))'")
                }
            default: throw mismatch()
            }
        case .geo:
            guard case .object(let o) = json, let lat = o["lat"]?.doubleValue, let lon = o["lon"]?.doubleValue,
                o.count == 2
            else {
                throw TocsinError(code, "\(what) must be a point {\"lat\": number, \"lon\": number}, got \(json.serialized.prefix(80))")
            }
            guard (-90...90).contains(lat), (-180...180).contains(lon) else {
                throw TocsinError(code, "\(what) is out of range: lat must be in [-90, 90] and lon in [-180, 180]")
            }
            self = .geo(GeoPoint(lat: lat, lon: lon))
        case .stringList:
            guard case .array(let a) = json else { throw mismatch() }
            var list: [String] = []
            list.reserveCapacity(a.count)
            for element in a {
                guard case .string(let s) = element else {
                    throw TocsinError(code, "\(what) must be a list of strings, but has a \(element.kindName)")
                }
                list.append(s)
            }
            self = .stringList(list)
        }
    }

    public func writeJSON(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .string(let s): JSONWriter.writeString(s, into: &out)
        case .int(let i): out += String(i)
        case .double(let d): JSONWriter.writeDouble(d, into: &out)
        case .bool(let b): out += b ? "true" : "false"
        case .time(let ms): JSONWriter.writeString(TimeFormat.format(ms), into: &out)
        case .geo(let p):
            out += "{\"lat\":"
            JSONWriter.writeDouble(p.lat, into: &out)
            out += ",\"lon\":"
            JSONWriter.writeDouble(p.lon, into: &out)
            out += "}"
        case .stringList(let l):
            out += "["
            for (i, s) in l.enumerated() {
                if i > 0 { out += "," }
                JSONWriter.writeString(s, into: &out)
            }
            out += "]"
        }
    }

    public var json: JSONValue {
        switch self {
        case .null: .null
        case .string(let s): .string(s)
        case .int(let i): .int(i)
        case .double(let d): .double(d)
        case .bool(let b): .bool(b)
        case .time(let ms): .string(TimeFormat.format(ms))
        case .geo(let p): .object(["lat": .double(p.lat), "lon": .double(p.lon)])
        case .stringList(let l): .array(l.map { .string($0) })
        }
    }
}

extension FieldType {
    var articleName: String {
        switch self {
        case .string: "a string"
        case .int: "an integer"
        case .double: "a number"
        case .bool: "a boolean"
        case .time: "a time"
        case .geo: "a point"
        case .stringList: "a list of strings"
        }
    }
}

public enum Identifier {
    /// Letters, digits and `_`, not starting with a digit, 1...64 characters.
    public static func isValid(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 64 else { return false }
        if first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9") { return false }
        return name.utf8.allSatisfy { b in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
                || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "_")
        }
    }

    /// Stream and channel names: identifier characters plus `-` and `.`, but not `.` or `..`
    /// (they would name the path segments themselves in `/v1/streams/{name}`).
    public static func isValidName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 128, name != ".", name != ".." else { return false }
        return name.utf8.allSatisfy { b in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
                || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "_")
                || b == UInt8(ascii: "-") || b == UInt8(ascii: ".")
        }
    }
}

extension Duration {
    /// Whole milliseconds (truncated toward zero).
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds (truncated toward zero).
    public var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
