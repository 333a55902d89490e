/// A slow, straightforward evaluator of parsed expressions over dynamic `Value`s: the reference that
/// property tests hold the compiled closures to. It assumes the expression type-checks.
struct Interpreter {
    let schema: StreamSchema
    let params: [ChannelParameter]
    let record: Record
    let values: [Value]
    let nowMillis: Int64
    /// In an enrich clause: the dataset's name, its fields and the record being considered.
    var joined: (name: String, schema: StreamSchema, record: Record)? = nil

    /// The `where` clause's verdict: only `true` matches (null and false do not).
    func matches(_ e: Expr) -> Bool {
        evaluate(e) == .bool(true)
    }

    func evaluate(_ e: Expr) -> Value {
        switch e.kind {
        case .int(let v): return .int(v)
        case .double(let v): return .double(v)
        case .string(let s): return .string(s)
        case .bool(let b): return .bool(b)
        case .null: return .null
        case .duration(let ms): return .int(ms)
        case .list(let items):
            return .stringList(items.compactMap { if case .string(let s) = evaluate($0) { s } else { nil } })
        case .field(let name): return record[schema.slot(of: name)!]
        case .qualified(_, let field): return joined!.record[joined!.schema.slot(of: field)!]
        case .param(let name): return values[params.firstIndex { $0.name == name }!]
        case .unary(.not, let x): return .bool(!matches(x))
        case .unary(.negate, let x):
            switch evaluate(x) {
            case .int(let v): return v == .min ? .null : .int(-v)
            case .double(let v): return .double(-v)
            default: return .null
            }
        case .binary(.and, let a, let b): return .bool(matches(a) && matches(b))
        case .binary(.or, let a, let b): return .bool(matches(a) || matches(b))
        case .binary(let op, let a, let b) where op.isComparison:
            let negated = op == .notEqual
            if case .null = a.kind { return .bool((evaluate(b) == .null) != negated) }
            if case .null = b.kind { return .bool((evaluate(a) == .null) != negated) }
            return .bool(compare(op, evaluate(a), evaluate(b)))
        case .binary(.in, let a, let b):
            guard case .string(let s) = evaluate(a), case .stringList(let l) = evaluate(b) else { return .bool(false) }
            return .bool(l.contains(s))
        case .binary(let op, let a, let b):
            return arithmetic(op, evaluate(a), evaluate(b))
        case .call(let name, let args):
            let v = args.map(evaluate)
            switch (name, v.count) {
            case ("now", 0): return .time(nowMillis)
            case ("distance", 2):
                guard case .geo(let x) = v[0], case .geo(let y) = v[1] else { return .null }
                return .double(x.distanceKm(to: y))
            case ("point", 2):
                guard let lat = v[0].numericNotTime, let lon = v[1].numericNotTime, let g = GeoPoint.validated(lat: lat, lon: lon)
                else { return .null }
                return .geo(g)
            case ("contains", 2):
                guard case .stringList(let l) = v[0], case .string(let s) = v[1] else { return .bool(false) }
                return .bool(l.contains(s))
            case ("startsWith", 2):
                guard case .string(let s) = v[0], case .string(let prefix) = v[1] else { return .bool(false) }
                return .bool(s.hasPrefix(prefix))
            case ("len", 1):
                guard case .stringList(let l) = v[0] else { return .null }
                return .int(Int64(l.count))
            case ("lower", 1):
                guard case .string(let s) = v[0] else { return .null }
                return .string(s.lowercased())
            default:
                preconditionFailure("unknown function \(name)")
            }
        }
    }

    private func compare(_ op: Expr.BinaryOperator, _ a: Value, _ b: Value) -> Bool {
        func holds<T: Comparable>(_ x: T, _ y: T) -> Bool {
            switch op {
            case .equal: x == y
            case .notEqual: x != y
            case .less: x < y
            case .lessOrEqual: x <= y
            case .greater: x > y
            case .greaterOrEqual: x >= y
            default: false
            }
        }
        switch (a, b) {
        case (.null, _), (_, .null): return false
        case (.int(let x), .int(let y)): return holds(x, y)
        case (.time(let x), .time(let y)): return holds(x, y)
        case (.string(let x), .string(let y)): return holds(x, y)
        case (.bool(let x), .bool(let y)): return op == .equal ? x == y : x != y
        case (.geo(let x), .geo(let y)): return op == .equal ? x == y : x != y
        case (.stringList(let x), .stringList(let y)): return op == .equal ? x == y : x != y
        default:
            guard let x = a.numericNotTime, let y = b.numericNotTime else { return false }
            return holds(x, y)
        }
    }

    private func arithmetic(_ op: Expr.BinaryOperator, _ a: Value, _ b: Value) -> Value {
        switch (a, b) {
        case (.time(let t), .int(let d)), (.int(let d), .time(let t)):
            let (v, overflow) = op == .subtract ? t.subtractingReportingOverflow(d) : t.addingReportingOverflow(d)
            return overflow ? .null : .time(v)
        case (.int(let x), .int(let y)) where op != .divide:
            let (v, overflow) =
                switch op {
                case .add: x.addingReportingOverflow(y)
                case .subtract: x.subtractingReportingOverflow(y)
                default: x.multipliedReportingOverflow(by: y)
                }
            return overflow ? .null : .int(v)
        default:
            guard let x = a.numericNotTime, let y = b.numericNotTime else { return .null }
            switch op {
            case .add: return .double(x + y)
            case .subtract: return .double(x - y)
            case .multiply: return .double(x * y)
            default: return .double(x / y)
            }
        }
    }
}

extension Value {
    /// An int or double as a double (not a time).
    fileprivate var numericNotTime: Double? {
        switch self {
        case .int(let v): Double(v)
        case .double(let v): v
        default: nil
        }
    }
}
