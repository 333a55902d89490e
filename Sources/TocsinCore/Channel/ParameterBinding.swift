/// A subscription parameter bound to a field of the subscriber's own record in a dataset
/// instead of a literal: `{"bind": "userLocations.location"}` for a geo parameter, or
/// `{"bind": "userLocations.location.lat"}` (`.lon`) for a double one. The record is the one
/// whose key is the subscriber's client id, so a phone that keeps its location current
/// (`write` over its WebSocket) keeps every subscription bound to it current: when the record
/// changes, the subscription moves at once (docs/channels.md, "Bound parameters").
public struct ParameterBinding: Sendable, Hashable {
    /// What of the field the parameter takes.
    public enum Part: Sendable, Hashable {
        case whole
        case lat
        case lon
    }

    /// The parameter's name and its slot in the channel's declared parameters.
    public var parameter: String
    public var dataset: String
    /// The field's slot in the dataset's records.
    public var field: Int
    public var part: Part

    /// The `bind` text of a parameter value, if the value is a binding (`{"bind": "…"}`).
    public static func text(of value: JSONValue) -> String? {
        guard case .object(let o) = value, o.count == 1, let text = o["bind"]?.stringValue else { return nil }
        return text
    }

    /// Reads `<dataset>.<field>` or `<dataset>.<geo field>.lat|lon` for a parameter of `type`;
    /// errors are `invalid_params` saying what is wrong.
    public init(parameter: String, type: FieldType, text: String, datasets: [String: DatasetDefinition]) throws(TocsinError) {
        func refuse(_ why: String) -> TocsinError {
            TocsinError(.invalidParams, "parameter '\(parameter)' binds to '\(text.prefix(200))': \(why)")
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3 else {
            throw refuse("expected <dataset>.<field>, or <dataset>.<geo field>.lat or .lon")
        }
        guard let dataset = datasets[parts[0]] else { throw refuse("there is no dataset '\(parts[0].prefix(130))'") }
        guard dataset.schema.fields[dataset.keySlot].type == .string else {
            throw refuse("dataset '\(dataset.name)' is keyed by \(dataset.schema.fields[dataset.keySlot].type.rawValue); a bound parameter reads the record keyed by the subscriber's client id, a string")
        }
        guard let slot = dataset.schema.slot(of: parts[1]) else {
            throw refuse("'\(dataset.name)' has no field '\(parts[1].prefix(130))' (fields: \(dataset.schema.fields.map(\.name).joined(separator: ", ")))")
        }
        let fieldType = dataset.schema.fields[slot].type
        var part = Part.whole
        if parts.count == 3 {
            guard fieldType == .geo, parts[2] == "lat" || parts[2] == "lon" else {
                throw refuse("only a geo field has parts, .lat and .lon")
            }
            part = parts[2] == "lat" ? .lat : .lon
        }
        let valueType: FieldType = part == .whole ? fieldType : .double
        guard valueType == type else {
            throw refuse("the parameter is \(type.rawValue) and the field is \(valueType.rawValue)")
        }
        self.parameter = parameter
        self.dataset = dataset.name
        self.field = slot
        self.part = part
    }

    /// The parameter's value in `record` (null when the field is absent).
    public func value(in record: Record) -> Value {
        let v = record[field]
        switch (part, v) {
        case (.whole, _): return v
        case (.lat, .geo(let g)): return .double(g.lat)
        case (.lon, .geo(let g)): return .double(g.lon)
        default: return .null
        }
    }
}

extension CompiledChannel {
    /// The bindings among a subscription's parameters (`{"bind": …}` values), checked against
    /// the channel's declared types and the datasets.
    public func bindings(params json: [String: JSONValue], datasets: [String: DatasetDefinition]) throws(TocsinError) -> [ParameterBinding] {
        var found: [ParameterBinding] = []
        for p in definition.params {
            guard let value = json[p.name], let text = ParameterBinding.text(of: value) else { continue }
            found.append(try ParameterBinding(parameter: p.name, type: p.type, text: text, datasets: datasets))
        }
        return found
    }

    /// `bind(params:)` with each bound parameter's value read from its record (`records`, by
    /// dataset name: the subscriber's record in each dataset a binding names). A missing record,
    /// or a record without the field, is an `invalid_params` error: the subscriber must write
    /// its record first.
    public func bind(
        params json: [String: JSONValue], bindings: [ParameterBinding], records: [String: Record], client: String
    ) throws(TocsinError) -> [Value] {
        guard !bindings.isEmpty else { return try bind(params: json) }
        var resolved = json
        for b in bindings {
            guard let record = records[b.dataset] else {
                throw TocsinError(
                    .invalidParams, "parameter '\(b.parameter)' is bound to '\(b.dataset)', which has no record '\(client.prefix(130))' yet: write it first")
            }
            let value = b.value(in: record)
            if case .null = value {
                throw TocsinError(.invalidParams, "parameter '\(b.parameter)' is bound to a field that record '\(client.prefix(130))' of '\(b.dataset)' does not have")
            }
            resolved[b.parameter] = value.json
        }
        return try bind(params: resolved)
    }
}
