/// A recursive-descent parser for the channel language (grammar in docs/channels.md).
///
/// Precedence, loosest first: `||`, `&&`, `!`, comparisons and `in` (not chainable),
/// `+ -`, `* /`, unary `-`, primaries.
struct Parser {
    /// Parentheses, brackets, calls and prefix operators nested deeper than this are an error,
    /// so hostile input cannot exhaust the stack.
    static let maxNesting = 64
    /// The tree may be no taller than this (long `&&` chains count too).
    static let maxHeight = 256

    private let tokens: [Token]
    private var position = 0
    private var nesting = 0

    private init(tokens: [Token]) {
        self.tokens = tokens
    }

    static func parse(_ text: String) throws(TocsinError) -> Expr {
        var parser = Parser(tokens: try Lexer.tokenize(text))
        if parser.current.kind == .end {
            throw error(parser.current.location, "the expression is empty (write 'true' to match every event)")
        }
        let expr = try parser.parseOr()
        if parser.current.kind != .end {
            let t = parser.current
            if t.kind == .less || t.kind == .lessOrEqual || t.kind == .greater || t.kind == .greaterOrEqual
                || t.kind == .equal || t.kind == .notEqual || t.kind == .keywordIn
            {
                throw error(t.location, "comparisons cannot be chained; combine them with '&&'")
            }
            if t.kind == .rightParen {
                throw error(t.location, "unmatched ')'")
            }
            throw error(t.location, "unexpected \(t.spelling) after a complete expression (missing an operator?)")
        }
        return expr
    }

    private static func error(_ at: SourcePosition, _ message: String) -> TocsinError {
        TocsinError(.invalidChannel, "at \(at): \(message)")
    }

    private var current: Token { tokens[position] }

    private mutating func advance() -> Token {
        let t = tokens[position]
        if position < tokens.count - 1 { position += 1 }
        return t
    }

    private mutating func enter(_ at: SourcePosition) throws(TocsinError) {
        nesting += 1
        if nesting > Parser.maxNesting {
            throw Parser.error(at, "the expression is nested too deeply (more than \(Parser.maxNesting) levels)")
        }
    }

    private func binary(_ op: Expr.BinaryOperator, _ lhs: Expr, _ rhs: Expr, at: SourcePosition) throws(TocsinError) -> Expr {
        let e = Expr(.binary(op, lhs, rhs), at: at)
        if e.height > Parser.maxHeight {
            throw Parser.error(at, "the expression is too large (more than \(Parser.maxHeight) levels of operators)")
        }
        return e
    }

    private mutating func parseOr() throws(TocsinError) -> Expr {
        var lhs = try parseAnd()
        while current.kind == .or {
            let op = advance()
            lhs = try binary(.or, lhs, try parseAnd(), at: op.location)
        }
        return lhs
    }

    private mutating func parseAnd() throws(TocsinError) -> Expr {
        var lhs = try parseNot()
        while current.kind == .and {
            let op = advance()
            lhs = try binary(.and, lhs, try parseNot(), at: op.location)
        }
        return lhs
    }

    private mutating func parseNot() throws(TocsinError) -> Expr {
        guard current.kind == .not else { return try parseComparison() }
        let op = advance()
        try enter(op.location)
        defer { nesting -= 1 }
        return Expr(.unary(.not, try parseNot()), at: op.location)
    }

    private mutating func parseComparison() throws(TocsinError) -> Expr {
        let lhs = try parseAdditive()
        let op: Expr.BinaryOperator
        switch current.kind {
        case .equal: op = .equal
        case .notEqual: op = .notEqual
        case .less: op = .less
        case .lessOrEqual: op = .lessOrEqual
        case .greater: op = .greater
        case .greaterOrEqual: op = .greaterOrEqual
        case .keywordIn: op = .in
        default: return lhs
        }
        let token = advance()
        return try binary(op, lhs, try parseAdditive(), at: token.location)
    }

    private mutating func parseAdditive() throws(TocsinError) -> Expr {
        var lhs = try parseMultiplicative()
        while current.kind == .plus || current.kind == .minus {
            let op = advance()
            lhs = try binary(op.kind == .plus ? .add : .subtract, lhs, try parseMultiplicative(), at: op.location)
        }
        return lhs
    }

    private mutating func parseMultiplicative() throws(TocsinError) -> Expr {
        var lhs = try parseUnary()
        while current.kind == .star || current.kind == .slash {
            let op = advance()
            lhs = try binary(op.kind == .star ? .multiply : .divide, lhs, try parseUnary(), at: op.location)
        }
        return lhs
    }

    private mutating func parseUnary() throws(TocsinError) -> Expr {
        guard current.kind == .minus else { return try parsePrimary() }
        let op = advance()
        try enter(op.location)
        defer { nesting -= 1 }
        return Expr(.unary(.negate, try parseUnary()), at: op.location)
    }

    private mutating func parsePrimary() throws(TocsinError) -> Expr {
        let t = advance()
        switch t.kind {
        case .int(let v): return Expr(.int(v), at: t.location)
        case .double(let v): return Expr(.double(v), at: t.location)
        case .string(let s): return Expr(.string(s), at: t.location)
        case .duration(let ms): return Expr(.duration(millis: ms), at: t.location)
        case .keywordTrue: return Expr(.bool(true), at: t.location)
        case .keywordFalse: return Expr(.bool(false), at: t.location)
        case .keywordNull: return Expr(.null, at: t.location)
        case .param(let name): return Expr(.param(name), at: t.location)
        case .leftParen:
            try enter(t.location)
            defer { nesting -= 1 }
            let inner = try parseOr()
            try expect(.rightParen, "')' to close the '(' at \(t.location)")
            return inner
        case .leftBracket:
            try enter(t.location)
            defer { nesting -= 1 }
            let items = try parseList(closing: .rightBracket, what: "']' to close the list at \(t.location)")
            return Expr(.list(items), at: t.location)
        case .identifier(let name):
            if current.kind == .dot {
                _ = advance()
                guard case .identifier(let field) = current.kind else {
                    throw Parser.error(current.location, "expected a field name after '\(name).', found \(current.spelling)")
                }
                _ = advance()
                return Expr(.qualified(name, field), at: t.location)
            }
            guard current.kind == .leftParen else { return Expr(.field(name), at: t.location) }
            let open = advance()
            try enter(open.location)
            defer { nesting -= 1 }
            let args = try parseList(closing: .rightParen, what: "')' to close the call of \(name) at \(t.location)")
            return Expr(.call(name, args), at: t.location)
        case .not:
            throw Parser.error(t.location, "'!' cannot appear here; put the negated expression in parentheses, like (!x)")
        case .end:
            throw Parser.error(t.location, "the expression ends too early; expected a value")
        default:
            throw Parser.error(t.location, "expected a value (field, $parameter, literal, call or '('), found \(t.spelling)")
        }
    }

    /// Comma-separated expressions up to `closing`; the opening token is already consumed.
    private mutating func parseList(closing: Token.Kind, what: String) throws(TocsinError) -> [Expr] {
        var items: [Expr] = []
        if current.kind == closing {
            _ = advance()
            return items
        }
        while true {
            items.append(try parseOr())
            if current.kind == .comma {
                _ = advance()
                continue
            }
            try expect(closing, what)
            return items
        }
    }

    private mutating func expect(_ kind: Token.Kind, _ what: String) throws(TocsinError) {
        guard current.kind == kind else {
            throw Parser.error(current.location, "expected \(what), found \(current.spelling)")
        }
        _ = advance()
    }
}
