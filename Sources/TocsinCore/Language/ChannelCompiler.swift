/// The channel language front door: parse, type-check, compile and plan a channel's `where` clause.
/// The language is described in docs/channels.md.
public enum ChannelCompiler {
    /// Parses and type-checks `definition.whereClause` against `schema` and `definition.params`,
    /// then compiles it and picks its index.
    /// Errors: `TocsinError(.invalidChannel, "at 1:23: <what is wrong>")` naming line:column.
    /// `datasets`: the datasets `enrich` clauses may read; a clause naming another one is an
    /// `invalid_channel` error.
    public static func compile(
        _ definition: ChannelDefinition, schema: StreamSchema, datasets: [String: DatasetDefinition] = [:]
    ) throws(TocsinError) -> CompiledChannel {
        let typed = try check(definition.whereClause, schema: schema, params: definition.params)
        var enrichments: [CompiledEnrichment] = []
        for (i, clause) in definition.enrich.enumerated() {
            guard let dataset = datasets[clause.from] else {
                throw TocsinError(.invalidChannel, "enrich[\(i)].from names '\(clause.from.prefix(130))', which is not a dataset")
            }
            enrichments.append(try CompiledEnrichment(clause, stream: schema, params: definition.params, dataset: dataset, what: "enrich[\(i)]"))
        }
        let plan = Planner.plan(typed)
        let residual: Predicate
        if plan.residual.isEmpty {
            residual = .always
        } else {
            let conjunction = plan.residual.dropFirst().reduce(plan.residual[0]) { TypedExpr(node: .and($0, $1), type: .bool) }
            residual = Predicate(Compiler.test(conjunction))
        }
        return CompiledChannel(
            definition: definition, schema: schema, plan: plan.index, residual: residual,
            residualThreshold: plan.residualThreshold, predicate: Predicate(Compiler.test(typed)), enrichments: enrichments,
            readsClock: typed.readsClock || enrichments.contains(where: \.readsClock))
    }

    /// Parses a `where` clause without checking names or types.
    public static func parse(_ text: String) throws(TocsinError) -> Expr {
        try Parser.parse(text)
    }

    /// Parses and type-checks a `where` clause; the result must be boolean.
    static func check(_ text: String, schema: StreamSchema, params: [ChannelParameter]) throws(TocsinError) -> TypedExpr {
        let expr = try Parser.parse(text)
        let typed = try TypeChecker(schema: schema, params: params).check(expr)
        guard typed.type == .bool else {
            throw TocsinError(
                .invalidChannel,
                "at \(expr.location): the where clause must be a condition (bool), but it is \(typed.type == .duration ? "a duration" : typed.type.description)"
            )
        }
        return typed
    }

    /// The reference semantics: evaluates `text` with the slow tree-walking interpreter.
    /// For tests; the expression must type-check.
    static func interpret(
        _ text: String, schema: StreamSchema, params: [ChannelParameter], record: Record, values: [Value], nowMillis: Int64
    ) throws(TocsinError) -> Bool {
        let expr = try Parser.parse(text)
        return Interpreter(schema: schema, params: params, record: record, values: values, nowMillis: nowMillis).matches(expr)
    }
}

extension IndexPlan {
    /// Whether the index condition alone admits `record` for a subscription with bound `params`:
    /// the exact meaning the matcher's index must implement. A slow reference for tests;
    /// `.scan` admits everything. A null field is never admitted.
    ///
    /// Thresholds compare two ints exactly and otherwise as doubles, like the evaluator;
    /// geo radius calls `GeoPoint.distanceKm` from the record's point to the centre.
    public func admits(_ record: Record, params: [Value]) -> Bool {
        switch self {
        case .equality(let field, let param):
            if case .null = record[field] { return false }
            return record[field] == params[param]
        case .membership(let field, let param):
            guard case .string(let s) = record[field], case .stringList(let list) = params[param] else { return false }
            return list.contains(s)
        case .geoRadius(let field, let lat, let lon, let radiusKm, let inclusive):
            guard case .geo(let point) = record[field], let la = lat.value(in: params), let lo = lon.value(in: params),
                let r = radiusKm.value(in: params), let centre = GeoPoint.validated(lat: la, lon: lo)
            else { return false }
            let d = point.distanceKm(to: centre)
            return inclusive ? d <= r : d < r
        case .threshold(let field, let comparison, let bound):
            let b: Value =
                switch bound {
                case .param(let i): params[i]
                case .constant(let c): .double(c)
                }
            return comparison.holds(record[field], b)
        case .scan:
            return true
        }
    }
}
