/// A position in a `where` clause: 1-based line and column (columns count Unicode scalars).
public struct SourcePosition: Sendable, Hashable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// A lexical token of the channel language.
struct Token: Sendable, Hashable {
    enum Kind: Sendable, Hashable {
        case int(Int64)
        case double(Double)
        case string(String)
        /// `500ms`, `10s`, `5m`, `2h`, `1d`, in milliseconds.
        case duration(Int64)
        case identifier(String)
        /// `$name`
        case param(String)
        case keywordTrue, keywordFalse, keywordNull, keywordIn
        case equal, notEqual, less, lessOrEqual, greater, greaterOrEqual
        case and, or, not
        case plus, minus, star, slash
        case leftParen, rightParen, leftBracket, rightBracket, comma
        /// `.` between a dataset's name and a field: `shelters.location` (enrich clauses only).
        case dot
        case end
    }

    var kind: Kind
    var location: SourcePosition

    /// How the token reads in an error message.
    var spelling: String {
        switch kind {
        case .int(let v): "number \(v)"
        case .double(let v): "number \(v)"
        case .string(let s): "string \"\(s.count > 20 ? String(s.prefix(20)) + "…" : s)\""
        case .duration(let ms): "duration \(Duration.format(millis: ms))"
        case .identifier(let name): "'\(name)'"
        case .param(let name): "'$\(name)'"
        case .keywordTrue: "'true'"
        case .keywordFalse: "'false'"
        case .keywordNull: "'null'"
        case .keywordIn: "'in'"
        case .equal: "'=='"
        case .notEqual: "'!='"
        case .less: "'<'"
        case .lessOrEqual: "'<='"
        case .greater: "'>'"
        case .greaterOrEqual: "'>='"
        case .and: "'&&'"
        case .or: "'||'"
        case .not: "'!'"
        case .plus: "'+'"
        case .minus: "'-'"
        case .star: "'*'"
        case .slash: "'/'"
        case .leftParen: "'('"
        case .rightParen: "')'"
        case .leftBracket: "'['"
        case .rightBracket: "']'"
        case .comma: "','"
        case .dot: "'.'"
        case .end: "the end of the expression"
        }
    }
}

/// Splits a `where` clause into tokens. Errors name the line and column of the offending character.
struct Lexer {
    static let maxLength = 65_536

    private let scalars: [Unicode.Scalar]
    private var index = 0
    private var line = 1
    private var column = 1

    init(_ text: String) {
        scalars = Array(text.unicodeScalars)
    }

    static func tokenize(_ text: String) throws(TocsinError) -> [Token] {
        var lexer = Lexer(text)
        guard lexer.scalars.count <= maxLength else {
            throw TocsinError(.invalidChannel, "at 1:1: the expression is longer than \(maxLength) characters")
        }
        var tokens: [Token] = []
        while true {
            let token = try lexer.next()
            tokens.append(token)
            if token.kind == .end { return tokens }
        }
    }

    private var current: Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }

    private func peek(_ offset: Int) -> Unicode.Scalar? {
        index + offset < scalars.count ? scalars[index + offset] : nil
    }

    private var here: SourcePosition { SourcePosition(line: line, column: column) }

    private mutating func advance() {
        if scalars[index] == "\n" {
            line += 1
            column = 1
        } else {
            column += 1
        }
        index += 1
    }

    private static func error(_ at: SourcePosition, _ message: String) -> TocsinError {
        TocsinError(.invalidChannel, "at \(at): \(message)")
    }

    static func isIdentifierStart(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_"
    }

    static func isIdentifierPart(_ c: Unicode.Scalar) -> Bool {
        isIdentifierStart(c) || isDigit(c)
    }

    static func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }

    private mutating func next() throws(TocsinError) -> Token {
        while let c = current, c == " " || c == "\t" || c == "\n" || c == "\r" {
            advance()
        }
        let start = here
        guard let c = current else { return Token(kind: .end, location: start) }

        func single(_ kind: Token.Kind) -> Token {
            advance()
            return Token(kind: kind, location: start)
        }
        func pair(_ second: Unicode.Scalar, _ kind: Token.Kind, else alone: Token.Kind?, hint: String) throws(TocsinError) -> Token {
            advance()
            if current == second {
                advance()
                return Token(kind: kind, location: start)
            }
            guard let alone else { throw Lexer.error(start, hint) }
            return Token(kind: alone, location: start)
        }

        switch c {
        case "(": return single(.leftParen)
        case ")": return single(.rightParen)
        case "[": return single(.leftBracket)
        case "]": return single(.rightBracket)
        case ",": return single(.comma)
        case ".": return single(.dot)
        case "+": return single(.plus)
        case "-": return single(.minus)
        case "*": return single(.star)
        case "/": return single(.slash)
        case "=": return try pair("=", .equal, else: nil, hint: "unexpected '='; use '==' to compare")
        case "!": return try pair("=", .notEqual, else: .not, hint: "")
        case "<": return try pair("=", .lessOrEqual, else: .less, hint: "")
        case ">": return try pair("=", .greaterOrEqual, else: .greater, hint: "")
        case "&": return try pair("&", .and, else: nil, hint: "unexpected '&'; use '&&' for 'and'")
        case "|": return try pair("|", .or, else: nil, hint: "unexpected '|'; use '||' for 'or'")
        case "\"", "'": return try string(quote: c, start: start)
        case "$":
            advance()
            guard let first = current, Lexer.isIdentifierStart(first) else {
                throw Lexer.error(start, "expected a parameter name after '$'")
            }
            return Token(kind: .param(identifier()), location: start)
        default:
            if Lexer.isDigit(c) { return try number(start: start) }
            if Lexer.isIdentifierStart(c) {
                let name = identifier()
                let kind: Token.Kind =
                    switch name {
                    case "true": .keywordTrue
                    case "false": .keywordFalse
                    case "null": .keywordNull
                    case "in": .keywordIn
                    default: .identifier(name)
                    }
                return Token(kind: kind, location: start)
            }
            let shown = c.value < 0x20 || c.value == 0x7F ? "U+\(String(c.value, radix: 16, uppercase: true))" : "'\(c)'"
            throw Lexer.error(start, "unexpected character \(shown)")
        }
    }

    private mutating func identifier() -> String {
        var name = String.UnicodeScalarView()
        while let c = current, Lexer.isIdentifierPart(c) {
            name.append(c)
            advance()
        }
        return String(name)
    }

    private mutating func number(start: SourcePosition) throws(TocsinError) -> Token {
        var digits = ""
        while let c = current, Lexer.isDigit(c) {
            digits.unicodeScalars.append(c)
            advance()
        }
        var isDecimal = false
        if current == ".", let after = peek(1), Lexer.isDigit(after) {
            isDecimal = true
            digits.append(".")
            advance()
            while let c = current, Lexer.isDigit(c) {
                digits.unicodeScalars.append(c)
                advance()
            }
        } else if current == "." {
            throw Lexer.error(here, "expected a digit after the decimal point")
        }
        if let c = current, Lexer.isIdentifierStart(c) {
            let unitStart = here
            let unit = identifier()
            let factor: Int64? =
                switch unit {
                case "ms": 1
                case "s": 1000
                case "m": 60_000
                case "h": 3_600_000
                case "d": 86_400_000
                default: nil
                }
            guard let factor else {
                throw Lexer.error(unitStart, "unexpected '\(unit)' after a number (duration units are ms, s, m, h, d)")
            }
            guard !isDecimal else {
                throw Lexer.error(start, "a duration must be a whole number, like 90m instead of 1.5h")
            }
            guard let n = Int64(digits), n <= Int64.max / factor else {
                throw Lexer.error(start, "duration \(digits)\(unit) is too large")
            }
            return Token(kind: .duration(n * factor), location: start)
        }
        if isDecimal {
            guard let d = Double(digits), d.isFinite else {
                throw Lexer.error(start, "number \(digits) is out of range")
            }
            return Token(kind: .double(d), location: start)
        }
        guard let n = Int64(digits) else {
            throw Lexer.error(start, "integer \(digits) is too large (at most \(Int64.max))")
        }
        return Token(kind: .int(n), location: start)
    }

    private mutating func string(quote: Unicode.Scalar, start: SourcePosition) throws(TocsinError) -> Token {
        advance()
        var text = String.UnicodeScalarView()
        while true {
            guard let c = current, c != "\n" else {
                throw Lexer.error(start, "unterminated string (a string ends with \(quote) on the same line)")
            }
            if c == quote {
                advance()
                return Token(kind: .string(String(text)), location: start)
            }
            if c == "\\" {
                let escapeAt = here
                advance()
                switch current {
                case "\"": text.append("\"")
                case "'": text.append("'")
                case "\\": text.append("\\")
                case "n": text.append("\n")
                case "t": text.append("\t")
                case "r": text.append("\r")
                case nil, "\n":
                    throw Lexer.error(start, "unterminated string (a string ends with \(quote) on the same line)")
                case let other?:
                    throw Lexer.error(escapeAt, "unknown escape '\\\(other)' (use \\\" \\' \\\\ \\n \\t \\r)")
                }
                advance()
                continue
            }
            text.append(c)
            advance()
        }
    }
}
