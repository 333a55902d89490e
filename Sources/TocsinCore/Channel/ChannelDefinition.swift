/// A typed parameter of a channel; `default` makes it optional for subscribers.
public struct ChannelParameter: Sendable, Hashable, Codable {
    public var name: String
    public var type: FieldType
    public var `default`: JSONValue?

    public init(name: String, type: FieldType, default: JSONValue? = nil) {
        self.name = name
        self.type = type
        self.default = `default`
    }
}

/// When a subscription is told about matches.
public enum ChannelMode: Sendable, Hashable {
    /// One notification per matching event.
    case continuous
    /// Matching events are collected per subscription and sent together once per period.
    case repetitive(periodMillis: Int64)

    /// The shortest period of a repetitive channel: 10ms.
    public static let minPeriodMillis: Int64 = 10
    /// The longest period of a repetitive channel: 30 days.
    public static let maxPeriodMillis: Int64 = 30 * 86_400_000
}

/// What a notification carries.
public enum DeliveryKind: String, Sendable, Hashable, Codable {
    /// The events inline.
    case push
    /// Only how many matched and up to which seq; the client fetches the results (notify-then-fetch).
    case notify
}

/// A parameterized, typed filter over one stream, as the user defined it.
public struct ChannelDefinition: Sendable, Hashable {
    public var name: String
    public var stream: String
    public var params: [ChannelParameter]
    /// The filter, in the channel language (docs/channels.md).
    public var whereClause: String
    public var mode: ChannelMode
    public var delivery: DeliveryKind
    /// Datasets joined with each matching event (`EnrichClause`), in the order declared.
    public var enrich: [EnrichClause]

    public init(
        name: String, stream: String, params: [ChannelParameter], whereClause: String,
        mode: ChannelMode = .continuous, delivery: DeliveryKind = .push, enrich: [EnrichClause] = []
    ) {
        self.name = name
        self.stream = stream
        self.params = params
        self.whereClause = whereClause
        self.mode = mode
        self.delivery = delivery
        self.enrich = enrich
    }
}

extension ChannelDefinition {
    /// The JSON form used by the HTTP API and the store:
    /// `{"stream", "params": [{"name","type","default"?}], "where", "mode": "continuous"|"repetitive", "period": "10s", "delivery": "push"|"notify"}`.
    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "name": .string(name),
            "stream": .string(stream),
            "params": .array(
                params.map { p in
                    var po: [String: JSONValue] = ["name": .string(p.name), "type": .string(p.type.rawValue)]
                    if let d = p.default { po["default"] = d }
                    return .object(po)
                }),
            "where": .string(whereClause),
            "delivery": .string(delivery.rawValue),
        ]
        switch mode {
        case .continuous:
            o["mode"] = .string("continuous")
        case .repetitive(let ms):
            o["mode"] = .string("repetitive")
            o["period"] = .string(Duration.format(millis: ms))
        }
        if !enrich.isEmpty { o["enrich"] = .array(enrich.map(\.json)) }
        return .object(o)
    }

    /// Reads the body of `PUT /v1/channels/{name}` (shape checks only; `ChannelCompiler` type-checks).
    public init(name: String, json: JSONValue) throws(TocsinError) {
        guard Identifier.isValidName(name) else {
            throw TocsinError(.invalidChannel, "channel name '\(name)' must be 1-128 characters of letters, digits, '_', '-' or '.', other than '.' and '..'")
        }
        guard case .object(let body) = json else {
            throw TocsinError(.invalidChannel, "a channel definition must be a JSON object")
        }
        for key in body.keys where !["name", "stream", "params", "where", "mode", "period", "delivery", "enrich"].contains(key) {
            throw TocsinError(.invalidChannel, "unknown key '\(key.prefix(80))' in channel definition (expected stream, params, where, mode, period, delivery, enrich)")
        }
        guard let stream = body["stream"]?.stringValue else {
            throw TocsinError(.invalidChannel, "'stream' must be the name of a stream")
        }
        guard let whereClause = body["where"]?.stringValue else {
            throw TocsinError(.invalidChannel, "'where' must be a string with the filter expression (use \"true\" to match every event)")
        }
        var params: [ChannelParameter] = []
        if let p = body["params"], p != .null {
            guard case .array(let list) = p else {
                throw TocsinError(.invalidChannel, "'params' must be an array of {\"name\", \"type\", \"default\"?}")
            }
            var seen = Set<String>()
            for (i, item) in list.enumerated() {
                guard case .object(let o) = item, let pname = o["name"]?.stringValue, let tname = o["type"]?.stringValue else {
                    throw TocsinError(.invalidChannel, "params[\(i)] must be an object with string 'name' and 'type'")
                }
                guard Identifier.isValid(pname) else {
                    throw TocsinError(.invalidChannel, "params[\(i)]: '\(pname)' is not an identifier")
                }
                guard let type = FieldType(rawValue: tname) else {
                    throw TocsinError(.invalidChannel, "params[\(i)] ('\(pname)') has unknown type '\(tname)'")
                }
                guard seen.insert(pname).inserted else {
                    throw TocsinError(.invalidChannel, "parameter '\(pname)' is declared twice")
                }
                var def: JSONValue? = nil
                if let d = o["default"], d != .null {
                    _ = try Value(json: d, as: type, what: "default of parameter '\(pname)'", code: .invalidChannel)
                    def = d
                }
                params.append(ChannelParameter(name: pname, type: type, default: def))
            }
        }
        var delivery = DeliveryKind.push
        if let d = body["delivery"], d != .null {
            guard let s = d.stringValue, let k = DeliveryKind(rawValue: s) else {
                throw TocsinError(.invalidChannel, "'delivery' must be \"push\" or \"notify\"")
            }
            delivery = k
        }
        var mode = ChannelMode.continuous
        switch body["mode"]?.stringValue {
        case nil, "continuous":
            if body["mode"] != nil && body["mode"]?.stringValue == nil {
                throw TocsinError(.invalidChannel, "'mode' must be \"continuous\" or \"repetitive\"")
            }
            if let p = body["period"], p != .null {
                throw TocsinError(.invalidChannel, "'period' applies only to mode \"repetitive\"")
            }
        case "repetitive":
            guard let text = body["period"]?.stringValue, let ms = Duration.parseMillis(text) else {
                throw TocsinError(.invalidChannel, "mode \"repetitive\" needs a 'period' such as \"500ms\", \"10s\", \"5m\"")
            }
            guard ms >= ChannelMode.minPeriodMillis, ms <= ChannelMode.maxPeriodMillis else {
                throw TocsinError(.invalidChannel, "'period' must be at least 10ms and at most 30d, got \(text.prefix(40))")
            }
            mode = .repetitive(periodMillis: ms)
        default:
            throw TocsinError(.invalidChannel, "'mode' must be \"continuous\" or \"repetitive\"")
        }
        var enrich: [EnrichClause] = []
        if let e = body["enrich"], e != .null {
            guard case .array(let list) = e else {
                throw TocsinError(.invalidChannel, "'enrich' must be an array of {\"from\", \"where\", \"orderBy\"?, \"order\"?, \"limit\", \"as\"?}")
            }
            guard list.count <= EnrichClause.maxClauses else {
                throw TocsinError(.invalidChannel, "a channel may have at most \(EnrichClause.maxClauses) enrich clauses, got \(list.count)")
            }
            for (i, item) in list.enumerated() {
                let clause = try EnrichClause(json: item, what: "enrich[\(i)]")
                guard !enrich.contains(where: { $0.alias == clause.alias }) else {
                    throw TocsinError(.invalidChannel, "enrich[\(i)]: two clauses put their records under '\(clause.alias)'; give one another 'as'")
                }
                enrich.append(clause)
            }
        }
        self.init(name: name, stream: stream, params: params, whereClause: whereClause, mode: mode, delivery: delivery, enrich: enrich)
    }
}

extension Duration {
    /// Parses `250ms`, `10s`, `5m`, `2h`, `1d` into milliseconds.
    public static func parseMillis(_ text: String) -> Int64? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if let n = Int64(number), n >= 0, n <= Int64.max / factor { return n * factor }
        }
        return nil
    }

    public static func format(millis: Int64) -> String {
        if millis % 86_400_000 == 0 { return "\(millis / 86_400_000)d" }
        if millis % 3_600_000 == 0 { return "\(millis / 3_600_000)h" }
        if millis % 60_000 == 0 { return "\(millis / 60_000)m" }
        if millis % 1000 == 0 { return "\(millis / 1000)s" }
        return "\(millis)ms"
    }
}
