/// The syntax tree of a channel's `where` clause, as parsed (names not yet resolved, types not
/// yet checked). Every node keeps the location of the token that names it, for error messages.
public struct Expr: Sendable, Hashable, CustomStringConvertible {
    public indirect enum Kind: Sendable, Hashable {
        case int(Int64)
        case double(Double)
        case string(String)
        case bool(Bool)
        case null
        /// A duration literal such as `10s`, in milliseconds.
        case duration(millis: Int64)
        /// `[a, b, ...]`
        case list([Expr])
        /// A field of the stream's schema.
        case field(String)
        /// `dataset.field`: a field of the dataset an enrich clause reads (`shelters.location`).
        case qualified(String, String)
        /// `$name`: a channel parameter.
        case param(String)
        case unary(UnaryOperator, Expr)
        case binary(BinaryOperator, Expr, Expr)
        /// `name(arguments)`
        case call(String, [Expr])
    }

    public enum UnaryOperator: String, Sendable, Hashable {
        case not = "!"
        case negate = "-"
    }

    public enum BinaryOperator: String, Sendable, Hashable {
        case or = "||"
        case and = "&&"
        case equal = "=="
        case notEqual = "!="
        case less = "<"
        case lessOrEqual = "<="
        case greater = ">"
        case greaterOrEqual = ">="
        case `in` = "in"
        case add = "+"
        case subtract = "-"
        case multiply = "*"
        case divide = "/"

        var isComparison: Bool {
            switch self {
            case .equal, .notEqual, .less, .lessOrEqual, .greater, .greaterOrEqual: true
            default: false
            }
        }
    }

    public var kind: Kind
    /// Where the node's token is: the literal, name or operator.
    public var location: SourcePosition
    /// Nodes on the longest path to a leaf (a leaf has height 1). Bounded by the parser.
    public let height: Int

    public init(_ kind: Kind, at location: SourcePosition) {
        self.kind = kind
        self.location = location
        switch kind {
        case .unary(_, let e): height = e.height + 1
        case .binary(_, let l, let r): height = max(l.height, r.height) + 1
        case .list(let items), .call(_, let items): height = (items.map(\.height).max() ?? 0) + 1
        default: height = 1
        }
    }

    /// The expression in fully parenthesized form, for messages and tests. It parses back to an
    /// equal tree (locations aside) unless a double literal prints with an exponent.
    public var description: String {
        switch kind {
        case .int(let v): return String(v)
        case .double(let v): return "\(v)"
        case .string(let s):
            var out = "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\t": out += "\\t"
                case "\r": out += "\\r"
                default: out.unicodeScalars.append(c)
                }
            }
            return out + "\""
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .duration(let ms): return Duration.format(millis: ms)
        case .list(let items): return "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .field(let name): return name
        case .qualified(let dataset, let field): return dataset + "." + field
        case .param(let name): return "$" + name
        case .unary(let op, let e): return "(" + op.rawValue + e.description + ")"
        case .binary(let op, let l, let r): return "(" + l.description + " " + op.rawValue + " " + r.description + ")"
        case .call(let name, let args): return name + "(" + args.map(\.description).joined(separator: ", ") + ")"
        }
    }
}
