/// A compiled boolean filter over an event record and a subscription's bound parameters.
///
/// `evaluate(record, params, nowMillis)`: `record` is in schema slot order, `params` in the
/// channel's declared parameter order (defaults already filled in by `CompiledChannel.bind`),
/// `nowMillis` is the evaluation time for `now()`.
public struct Predicate: Sendable {
    public let evaluate: @Sendable (_ record: Record, _ params: [Value], _ nowMillis: Int64) -> Bool

    public init(_ evaluate: @escaping @Sendable (_ record: Record, _ params: [Value], _ nowMillis: Int64) -> Bool) {
        self.evaluate = evaluate
    }

    public static let always = Predicate { _, _, _ in true }
}

/// A numeric operand of an index plan: a channel parameter or a constant.
public enum Operand: Sendable, Hashable {
    /// Index into the bound parameter list.
    case param(Int)
    case constant(Double)

    @inlinable
    public func value(in params: [Value]) -> Double? {
        switch self {
        case .param(let i): params[i].numeric
        case .constant(let c): c
        }
    }
}

/// `record[field] <comparison> bound`.
public enum Comparison: String, Sendable, Hashable {
    case lessThan = "<"
    case lessOrEqual = "<="
    case greaterThan = ">"
    case greaterOrEqual = ">="
}

extension Comparison {
    /// `value <comparison> bound` as the evaluator decides it: two ints or two times exactly,
    /// any other two numbers as doubles; false when either is not a number (null, NaN included).
    @inlinable
    public func holds(_ value: Value, _ bound: Value) -> Bool {
        switch (value, bound) {
        case (.int(let x), .int(let y)): return holds(x, y)
        case (.time(let x), .time(let y)): return holds(x, y)
        default:
            guard let x = value.numeric, let y = bound.numeric else { return false }
            return holds(x, y)
        }
    }

    @inlinable
    func holds<T: Comparable>(_ x: T, _ y: T) -> Bool {
        switch self {
        case .lessThan: x < y
        case .lessOrEqual: x <= y
        case .greaterThan: x > y
        case .greaterOrEqual: x >= y
        }
    }
}

/// A conjunct `record[field] <comparison> $param` of the residual (a numeric or time field),
/// which the matcher checks before the residual against each interest's parameter kept in a
/// dense array: one load per candidate instead of the residual's walk through the interest's
/// parameters. When it is the whole residual, it alone decides (`Comparison.holds` is the
/// evaluator's comparison).
public struct ResidualThreshold: Sendable, Hashable {
    public var field: Int
    public var comparison: Comparison
    public var param: Int
    public var isWholeResidual: Bool

    public init(field: Int, comparison: Comparison, param: Int, isWholeResidual: Bool) {
        self.field = field
        self.comparison = comparison
        self.param = param
        self.isWholeResidual = isWholeResidual
    }
}

/// How the matcher finds candidate subscriptions of a channel for an event.
/// The planner picks one top-level conjunct of the `where` clause; the rest is the residual.
public enum IndexPlan: Sendable, Hashable {
    /// `field == $param`, field and parameter of the same type (string, int or bool): hash lookup.
    case equality(field: Int, param: Int)
    /// `field in $param` with a string field and a list<string> parameter: the subscription is
    /// indexed under each string of its list.
    case membership(field: Int, param: Int)
    /// `distance(field, point(lat, lon)) <= radiusKm` (or `<` when `inclusive` is false): spatial grid.
    case geoRadius(field: Int, lat: Operand, lon: Operand, radiusKm: Operand, inclusive: Bool)
    /// `field <comparison> $param` on a numeric or time field: sorted thresholds.
    case threshold(field: Int, comparison: Comparison, bound: Operand)
    /// No usable conjunct: every interest of the channel is a candidate.
    case scan
}

/// A channel type-checked against its stream and compiled for matching.
public struct CompiledChannel: Sendable {
    public let definition: ChannelDefinition
    public let schema: StreamSchema
    public let plan: IndexPlan
    /// The conjuncts that `plan` does not decide exactly. Candidates from the index must pass it.
    public let residual: Predicate
    /// A threshold conjunct of the residual the matcher checks first, if there is one.
    public let residualThreshold: ResidualThreshold?
    /// The whole `where` clause (the brute-force reference).
    public let predicate: Predicate
    /// The `enrich` clauses, compiled against their datasets.
    public let enrichments: [CompiledEnrichment]
    /// The `where` clause or an enrich clause calls `now()`: what matches depends on when it is
    /// evaluated, so results are not cached (`ResultCache`).
    public let readsClock: Bool

    public init(
        definition: ChannelDefinition, schema: StreamSchema, plan: IndexPlan, residual: Predicate,
        residualThreshold: ResidualThreshold? = nil, predicate: Predicate, enrichments: [CompiledEnrichment] = [], readsClock: Bool = false
    ) {
        self.readsClock = readsClock
        self.definition = definition
        self.schema = schema
        self.plan = plan
        self.residual = residual
        self.residualThreshold = residualThreshold
        self.predicate = predicate
        self.enrichments = enrichments
    }

    public var name: String { definition.name }

    /// Checks a subscriber's parameters against the channel's declaration and returns them in
    /// declared order, defaults filled in. Unknown, missing or mistyped parameters are
    /// `invalid_params` errors naming the parameter.
    public func bind(params json: [String: JSONValue]) throws(TocsinError) -> [Value] {
        for key in json.keys where !definition.params.contains(where: { $0.name == key }) {
            let known = definition.params.map(\.name).joined(separator: ", ")
            throw TocsinError(.invalidParams, "channel '\(name)' has no parameter '\(key)' (parameters: \(known.isEmpty ? "none" : known))")
        }
        var bound: [Value] = []
        bound.reserveCapacity(definition.params.count)
        for p in definition.params {
            // `null` is absent. (Spelled out: JSONValue is ExpressibleByNilLiteral, so a `nil`
            // in a closure returning JSONValue? would be JSONValue.null, not absent.)
            let given: JSONValue?
            if let value = json[p.name], value != .null { given = value } else { given = p.default }
            guard let given else {
                throw TocsinError(.invalidParams, "missing parameter '\(p.name)' (\(p.type.rawValue)) of channel '\(name)'")
            }
            bound.append(try Value(json: given, as: p.type, what: "parameter '\(p.name)'", code: .invalidParams))
        }
        return bound
    }
}
