/// The type of an expression: a field type, or one of the types only expressions have.
enum ExprType: Sendable, Hashable, CustomStringConvertible {
    case string, int, double, bool, time, geo, stringList
    /// A duration literal: only usable in time arithmetic.
    case duration
    /// The `null` literal: only usable in `== null` / `!= null`.
    case null

    init(_ type: FieldType) {
        switch type {
        case .string: self = .string
        case .int: self = .int
        case .double: self = .double
        case .bool: self = .bool
        case .time: self = .time
        case .geo: self = .geo
        case .stringList: self = .stringList
        }
    }

    var isNumeric: Bool { self == .int || self == .double }

    var description: String {
        switch self {
        case .string: "string"
        case .int: "int"
        case .double: "double"
        case .bool: "bool"
        case .time: "time"
        case .geo: "geo"
        case .stringList: "list<string>"
        case .duration: "duration"
        case .null: "null"
        }
    }
}

enum Function: String, Sendable, Hashable, CaseIterable {
    case distance, point, contains, startsWith, now, len, lower

    var signature: String {
        switch self {
        case .distance: "distance(geo, geo) -> double"
        case .point: "point(lat double, lon double) -> geo"
        case .contains: "contains(list<string>, string) -> bool"
        case .startsWith: "startsWith(string, string) -> bool"
        case .now: "now() -> time"
        case .len: "len(list<string>) -> int"
        case .lower: "lower(string) -> string"
        }
    }
}

enum ArithmeticOperator: Sendable, Hashable {
    case add, subtract, multiply, divide
}

enum ComparisonOperator: String, Sendable, Hashable {
    case equal = "=="
    case notEqual = "!="
    case less = "<"
    case lessOrEqual = "<="
    case greater = ">"
    case greaterOrEqual = ">="

    /// The operator with its operands swapped: `a < b` is `b > a`.
    var mirrored: ComparisonOperator {
        switch self {
        case .equal, .notEqual: self
        case .less: .greater
        case .lessOrEqual: .greaterOrEqual
        case .greater: .less
        case .greaterOrEqual: .lessOrEqual
        }
    }

    @inline(__always)
    func holds<T: Comparable>(_ a: T, _ b: T) -> Bool {
        switch self {
        case .equal: a == b
        case .notEqual: a != b
        case .less: a < b
        case .lessOrEqual: a <= b
        case .greater: a > b
        case .greaterOrEqual: a >= b
        }
    }
}

/// A type-checked expression with names resolved to record slots and parameter indexes.
struct TypedExpr: Sendable, Hashable {
    indirect enum Node: Sendable, Hashable {
        /// A literal: `.int`, `.double`, `.string` or `.bool`.
        case constant(Value)
        case duration(Int64)
        case field(slot: Int)
        case param(index: Int)
        /// A list literal of string expressions.
        case list([TypedExpr])
        case not(TypedExpr)
        case and(TypedExpr, TypedExpr)
        case or(TypedExpr, TypedExpr)
        case negate(TypedExpr)
        case arithmetic(ArithmeticOperator, TypedExpr, TypedExpr)
        /// Both operands have the same type, or both are numeric (then compared as doubles unless both are int).
        case compare(ComparisonOperator, TypedExpr, TypedExpr)
        /// `e == null` (or `e != null` when `negated`).
        case isNull(TypedExpr, negated: Bool)
        /// `string in list<string>`
        case member(TypedExpr, TypedExpr)
        case call(Function, [TypedExpr])
    }

    var node: Node
    var type: ExprType
}

extension TypedExpr {
    /// Whether the expression calls `now()`: its value depends on when it is evaluated.
    var readsClock: Bool {
        switch node {
        case .call(.now, _): true
        case .constant, .duration, .field, .param: false
        case .list(let items), .call(_, let items): items.contains { $0.readsClock }
        case .not(let x), .negate(let x), .isNull(let x, _): x.readsClock
        case .and(let a, let b), .or(let a, let b), .arithmetic(_, let a, let b), .compare(_, let a, let b), .member(let a, let b):
            a.readsClock || b.readsClock
        }
    }
}
