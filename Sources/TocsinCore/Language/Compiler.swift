/// A compiled piece of an expression: reads a record, the bound parameters and the evaluation time.
typealias Eval<T> = @Sendable (_ record: Record, _ params: [Value], _ nowMillis: Int64) -> T

/// Compiles type-checked expressions into trees of closures specialised by type.
///
/// Each typed getter returns `nil` for null (an absent optional field, or arithmetic that overflowed);
/// `test` turns a boolean expression into a closure where null counts as false. Comparisons whose
/// operands are both fields, parameters or literals become a single closure that reads the slots
/// directly, so `severity >= $minSeverity` is one indirect call and no allocation.
enum Compiler {
    // MARK: Booleans

    static func test(_ e: TypedExpr) -> Eval<Bool> {
        switch e.node {
        case .constant(let v):
            if case .bool(true) = v { return { _, _, _ in true } }
            return { _, _, _ in false }
        case .field(let slot):
            return { r, _, _ in
                if case .bool(true) = r[slot] { return true }
                return false
            }
        case .param(let index):
            return { _, p, _ in
                if case .bool(true) = p[index] { return true }
                return false
            }
        case .not(let x):
            let f = test(x)
            return { r, p, n in !f(r, p, n) }
        case .and(let a, let b):
            let fa = test(a)
            let fb = test(b)
            return { r, p, n in fa(r, p, n) && fb(r, p, n) }
        case .or(let a, let b):
            let fa = test(a)
            let fb = test(b)
            return { r, p, n in fa(r, p, n) || fb(r, p, n) }
        case .compare(let op, let l, let r):
            return compare(op, l, r)
        case .isNull(let x, let negated):
            let isNull = nullCheck(x)
            if negated { return { r, p, n in !isNull(r, p, n) } }
            return isNull
        case .member(let l, let list):
            let s = string(l)
            if case .list(let items) = list.node, let constants = constantStrings(items) {
                if constants.count > 8 {
                    let set = Set(constants)
                    return { r, p, n in s(r, p, n).map { set.contains($0) } ?? false }
                }
                return { r, p, n in s(r, p, n).map { constants.contains($0) } ?? false }
            }
            if case .list(let items) = list.node {
                // Compare item by item rather than building the list; null items match nothing.
                let getters = items.map { string($0) }
                return { r, p, n in
                    guard let x = s(r, p, n) else { return false }
                    return getters.contains { $0(r, p, n) == x }
                }
            }
            let l = self.list(list)
            return { r, p, n in
                guard let x = s(r, p, n), let items = l(r, p, n) else { return false }
                return items.contains(x)
            }
        case .call(.contains, let args):
            let l = list(args[0])
            let s = string(args[1])
            return { r, p, n in
                guard let items = l(r, p, n), let x = s(r, p, n) else { return false }
                return items.contains(x)
            }
        case .call(.startsWith, let args):
            let a = string(args[0])
            let b = string(args[1])
            return { r, p, n in
                guard let x = a(r, p, n), let prefix = b(r, p, n) else { return false }
                return x.hasPrefix(prefix)
            }
        default:
            preconditionFailure("not a boolean expression: \(e)")
        }
    }

    /// A boolean value that may be null (only fields and parameters can be).
    static func bool(_ e: TypedExpr) -> Eval<Bool?> {
        switch e.node {
        case .field(let slot):
            return { r, _, _ in
                if case .bool(let b) = r[slot] { return b }
                return nil
            }
        case .param(let index):
            return { _, p, _ in
                if case .bool(let b) = p[index] { return b }
                return nil
            }
        default:
            let f = test(e)
            return { r, p, n in f(r, p, n) }
        }
    }

    static func nullCheck(_ e: TypedExpr) -> Eval<Bool> {
        switch e.node {
        case .field(let slot):
            return { r, _, _ in
                if case .null = r[slot] { return true }
                return false
            }
        case .param(let index):
            return { _, p, _ in
                if case .null = p[index] { return true }
                return false
            }
        default:
            switch e.type {
            case .int:
                let f = int(e)
                return { r, p, n in f(r, p, n) == nil }
            case .double:
                let f = double(e)
                return { r, p, n in f(r, p, n) == nil }
            case .time:
                let f = time(e)
                return { r, p, n in f(r, p, n) == nil }
            case .string:
                let f = string(e)
                return { r, p, n in f(r, p, n) == nil }
            case .geo:
                let f = geo(e)
                return { r, p, n in f(r, p, n) == nil }
            case .stringList:
                let f = list(e)
                return { r, p, n in f(r, p, n) == nil }
            case .bool, .duration, .null:
                return { _, _, _ in false }
            }
        }
    }

    // MARK: Comparisons

    static func compare(_ op: ComparisonOperator, _ l: TypedExpr, _ r: TypedExpr) -> Eval<Bool> {
        switch (l.type, r.type) {
        case (.int, .int):
            return leafCompare(op, l, r, IntSlot.self) ?? ordered(op, int(l), int(r))
        case (.int, .double), (.double, .int), (.double, .double):
            return leafCompare(op, l, r, NumberSlot.self) ?? ordered(op, double(l), double(r))
        case (.time, .time):
            return leafCompare(op, l, r, TimeSlot.self) ?? ordered(op, time(l), time(r))
        case (.string, .string):
            return leafCompare(op, l, r, StringSlot.self) ?? ordered(op, string(l), string(r))
        case (.bool, .bool):
            return equated(op, bool(l), bool(r))
        case (.geo, .geo):
            return equated(op, geo(l), geo(r))
        case (.stringList, .stringList):
            return equated(op, list(l), list(r))
        default:
            preconditionFailure("cannot compare \(l.type) with \(r.type)")
        }
    }

    private static func ordered<T: Comparable & Sendable>(_ op: ComparisonOperator, _ a: @escaping Eval<T?>, _ b: @escaping Eval<T?>)
        -> Eval<Bool>
    {
        { r, p, n in
            guard let x = a(r, p, n), let y = b(r, p, n) else { return false }
            return op.holds(x, y)
        }
    }

    private static func equated<T: Equatable & Sendable>(_ op: ComparisonOperator, _ a: @escaping Eval<T?>, _ b: @escaping Eval<T?>)
        -> Eval<Bool>
    {
        let equal = op == .equal
        return { r, p, n in
            guard let x = a(r, p, n), let y = b(r, p, n) else { return false }
            return (x == y) == equal
        }
    }

    /// Where a leaf operand is read from.
    private enum Access {
        case field(Int)
        case param(Int)

        init?(_ e: TypedExpr) {
            switch e.node {
            case .field(let slot): self = .field(slot)
            case .param(let index): self = .param(index)
            default: return nil
            }
        }

        @inline(__always)
        func read(_ record: Record, _ params: [Value]) -> Value {
            switch self {
            case .field(let slot): record[slot]
            case .param(let index): params[index]
            }
        }
    }

    /// A single closure for comparisons of fields, parameters and literals; nil for other shapes.
    private static func leafCompare<S: Slot>(_ op: ComparisonOperator, _ l: TypedExpr, _ r: TypedExpr, _: S.Type) -> Eval<Bool>? {
        if let a = Access(l), let b = Access(r) {
            return { rec, p, _ in
                guard let x = S.read(a.read(rec, p)), let y = S.read(b.read(rec, p)) else { return false }
                return op.holds(x, y)
            }
        }
        let access: Access
        let constant: Value
        let op2: ComparisonOperator
        if let a = Access(l), case .constant(let c) = r.node {
            (access, constant, op2) = (a, c, op)
        } else if let b = Access(r), case .constant(let c) = l.node {
            (access, constant, op2) = (b, c, op.mirrored)
        } else {
            return nil
        }
        let op = op2
        guard let y = S.read(constant) else { return nil }
        return { rec, p, _ in
            guard let x = S.read(access.read(rec, p)) else { return false }
            return op.holds(x, y)
        }
    }

    // MARK: Typed getters

    static func int(_ e: TypedExpr) -> Eval<Int64?> {
        switch e.node {
        case .constant(let v):
            let c = IntSlot.read(v)
            return { _, _, _ in c }
        case .field(let slot):
            return { r, _, _ in IntSlot.read(r[slot]) }
        case .param(let index):
            return { _, p, _ in IntSlot.read(p[index]) }
        case .negate(let x):
            let f = int(x)
            return { r, p, n in
                guard let v = f(r, p, n), v != .min else { return nil }
                return -v
            }
        case .arithmetic(let op, let a, let b):
            let fa = int(a)
            let fb = int(b)
            switch op {
            case .add:
                return { r, p, n in
                    guard let x = fa(r, p, n), let y = fb(r, p, n) else { return nil }
                    let (v, overflow) = x.addingReportingOverflow(y)
                    return overflow ? nil : v
                }
            case .subtract:
                return { r, p, n in
                    guard let x = fa(r, p, n), let y = fb(r, p, n) else { return nil }
                    let (v, overflow) = x.subtractingReportingOverflow(y)
                    return overflow ? nil : v
                }
            case .multiply:
                return { r, p, n in
                    guard let x = fa(r, p, n), let y = fb(r, p, n) else { return nil }
                    let (v, overflow) = x.multipliedReportingOverflow(by: y)
                    return overflow ? nil : v
                }
            case .divide:
                preconditionFailure("int / int is a double")
            }
        case .call(.len, let args):
            let l = list(args[0])
            return { r, p, n in l(r, p, n).map { Int64($0.count) } }
        default:
            preconditionFailure("not an int expression: \(e)")
        }
    }

    /// A number as a double: int expressions are converted.
    static func double(_ e: TypedExpr) -> Eval<Double?> {
        if e.type == .int {
            if case .constant(.int(let v)) = e.node {
                let c = Double(v)
                return { _, _, _ in c }
            }
            let f = int(e)
            return { r, p, n in f(r, p, n).map(Double.init) }
        }
        switch e.node {
        case .constant(let v):
            let c = NumberSlot.read(v)
            return { _, _, _ in c }
        case .field(let slot):
            return { r, _, _ in NumberSlot.read(r[slot]) }
        case .param(let index):
            return { _, p, _ in NumberSlot.read(p[index]) }
        case .negate(let x):
            let f = double(x)
            return { r, p, n in f(r, p, n).map { -$0 } }
        case .arithmetic(let op, let a, let b):
            let fa = double(a)
            let fb = double(b)
            switch op {
            case .add:
                return { r, p, n in
                    guard let x = fa(r, p, n), let y = fb(r, p, n) else { return nil }
                    return x + y
                }
            case .subtract:
                return { r, p, n in
                    guard let x = fa(r, p, n), let y = fb(r, p, n) else { return nil }
                    return x - y
                }
            case .multiply:
                return { r, p, n in
                    guard let x = fa(r, p, n), let y = fb(r, p, n) else { return nil }
                    return x * y
                }
            case .divide:
                return { r, p, n in
                    guard let x = fa(r, p, n), let y = fb(r, p, n) else { return nil }
                    return x / y
                }
            }
        case .call(.distance, let args):
            let a = geo(args[0])
            let b = geo(args[1])
            return { r, p, n in
                guard let x = a(r, p, n), let y = b(r, p, n) else { return nil }
                return x.distanceKm(to: y)
            }
        default:
            preconditionFailure("not a double expression: \(e)")
        }
    }

    static func time(_ e: TypedExpr) -> Eval<Int64?> {
        switch e.node {
        case .field(let slot):
            return { r, _, _ in TimeSlot.read(r[slot]) }
        case .param(let index):
            return { _, p, _ in TimeSlot.read(p[index]) }
        case .call(.now, _):
            return { _, _, n in n }
        case .arithmetic(let op, let t, let d):
            let ft = time(t)
            let fd = duration(d)
            let subtract = op == .subtract
            return { r, p, n in
                guard let x = ft(r, p, n), let y = fd(r, p, n) else { return nil }
                let (v, overflow) = subtract ? x.subtractingReportingOverflow(y) : x.addingReportingOverflow(y)
                return overflow ? nil : v
            }
        default:
            preconditionFailure("not a time expression: \(e)")
        }
    }

    static func duration(_ e: TypedExpr) -> Eval<Int64?> {
        switch e.node {
        case .duration(let ms):
            return { _, _, _ in ms }
        case .negate(let x):
            let f = duration(x)
            return { r, p, n in
                guard let v = f(r, p, n), v != .min else { return nil }
                return -v
            }
        default:
            preconditionFailure("not a duration expression: \(e)")
        }
    }

    static func string(_ e: TypedExpr) -> Eval<String?> {
        switch e.node {
        case .constant(let v):
            let c = StringSlot.read(v)
            return { _, _, _ in c }
        case .field(let slot):
            return { r, _, _ in StringSlot.read(r[slot]) }
        case .param(let index):
            return { _, p, _ in StringSlot.read(p[index]) }
        case .call(.lower, let args):
            let f = string(args[0])
            return { r, p, n in f(r, p, n)?.lowercased() }
        default:
            preconditionFailure("not a string expression: \(e)")
        }
    }

    static func geo(_ e: TypedExpr) -> Eval<GeoPoint?> {
        switch e.node {
        case .field(let slot):
            return { r, _, _ in
                if case .geo(let g) = r[slot] { return g }
                return nil
            }
        case .param(let index):
            return { _, p, _ in
                if case .geo(let g) = p[index] { return g }
                return nil
            }
        case .call(.point, let args):
            if let lat = constantNumber(args[0]), let lon = constantNumber(args[1]) {
                let g = GeoPoint.validated(lat: lat, lon: lon)
                return { _, _, _ in g }
            }
            let lat = double(args[0])
            let lon = double(args[1])
            return { r, p, n in
                guard let a = lat(r, p, n), let b = lon(r, p, n) else { return nil }
                return GeoPoint.validated(lat: a, lon: b)
            }
        default:
            preconditionFailure("not a geo expression: \(e)")
        }
    }

    /// A list value; null items of a list literal are left out.
    static func list(_ e: TypedExpr) -> Eval<[String]?> {
        switch e.node {
        case .field(let slot):
            return { r, _, _ in
                if case .stringList(let l) = r[slot] { return l }
                return nil
            }
        case .param(let index):
            return { _, p, _ in
                if case .stringList(let l) = p[index] { return l }
                return nil
            }
        case .list(let items):
            if let constants = constantStrings(items) {
                return { _, _, _ in constants }
            }
            let getters = items.map { string($0) }
            return { r, p, n in getters.compactMap { $0(r, p, n) } }
        default:
            preconditionFailure("not a list expression: \(e)")
        }
    }

    // MARK: Constants

    private static func constantStrings(_ items: [TypedExpr]) -> [String]? {
        var out: [String] = []
        for item in items {
            guard case .constant(.string(let s)) = item.node else { return nil }
            out.append(s)
        }
        return out
    }

    /// A numeric literal, possibly negated, as the evaluator would compute it.
    static func constantNumber(_ e: TypedExpr) -> Double? {
        switch e.node {
        case .constant(.int(let v)): Double(v)
        case .constant(.double(let v)): v
        case .negate(let x):
            // -(int) is computed in Int64 and then converted; identical except for Int64.min, which no literal reaches.
            constantNumber(x).map { -$0 }
        default: nil
        }
    }
}

// MARK: - Reading typed values out of `Value`

protocol Slot: SendableMetatype {
    associatedtype T: Comparable & Sendable
    static func read(_ value: Value) -> T?
}

enum IntSlot: Slot {
    @inline(__always)
    static func read(_ value: Value) -> Int64? {
        if case .int(let v) = value { return v }
        return nil
    }
}

/// int or double, as a double.
enum NumberSlot: Slot {
    @inline(__always)
    static func read(_ value: Value) -> Double? {
        switch value {
        case .double(let v): v
        case .int(let v): Double(v)
        default: nil
        }
    }
}

enum TimeSlot: Slot {
    @inline(__always)
    static func read(_ value: Value) -> Int64? {
        if case .time(let v) = value { return v }
        return nil
    }
}

enum StringSlot: Slot {
    @inline(__always)
    static func read(_ value: Value) -> String? {
        if case .string(let v) = value { return v }
        return nil
    }
}
