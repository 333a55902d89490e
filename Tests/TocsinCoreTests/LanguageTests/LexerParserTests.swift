import Testing

@testable import TocsinCore

@Suite struct LexerParserTests {
    func parsed(_ text: String) throws -> String {
        try ChannelCompiler.parse(text).description
    }

    func parseError(_ text: String) -> String? {
        do {
            _ = try ChannelCompiler.parse(text)
            return nil
        } catch {
            #expect(error.code == .invalidChannel)
            return error.message
        }
    }

    @Test func precedence() throws {
        #expect(try parsed("a || b && c") == "(a || (b && c))")
        #expect(try parsed("a && b || c && d") == "((a && b) || (c && d))")
        #expect(try parsed("!a && b") == "((!a) && b)")
        #expect(try parsed("!a == b") == "(!(a == b))")
        #expect(try parsed("!!a") == "(!(!a))")
        #expect(try parsed("a + b * c == d") == "((a + (b * c)) == d)")
        #expect(try parsed("a - b - c") == "((a - b) - c)")
        #expect(try parsed("a / b * c") == "((a / b) * c)")
        #expect(try parsed("-a * b") == "((-a) * b)")
        #expect(try parsed("- -a") == "(-(-a))")
        #expect(try parsed("(a || b) && c") == "((a || b) && c)")
        #expect(try parsed("x in [\"a\"] || y") == "((x in [\"a\"]) || y)")
        #expect(try parsed("a + 1 in l") == "((a + 1) in l)")
        #expect(try parsed("time >= now() - 1h") == "(time >= (now() - 1h))")
    }

    @Test func literals() throws {
        #expect(try ChannelCompiler.parse("42").kind == .int(42))
        #expect(try ChannelCompiler.parse("3.5").kind == .double(3.5))
        #expect(try ChannelCompiler.parse("0.25").kind == .double(0.25))
        #expect(try ChannelCompiler.parse("true").kind == .bool(true))
        #expect(try ChannelCompiler.parse("false").kind == .bool(false))
        #expect(try ChannelCompiler.parse("null").kind == .null)
        #expect(try ChannelCompiler.parse(#""a \"b\" \\ \n""#).kind == .string("a \"b\" \\ \n"))
        #expect(try ChannelCompiler.parse(#"'it\'s "x"'"#).kind == .string("it's \"x\""))
        #expect(try ChannelCompiler.parse("\"héllo ✓\"").kind == .string("héllo ✓"))
        for (text, ms) in [("500ms", 500), ("10s", 10_000), ("5m", 300_000), ("2h", 7_200_000), ("1d", 86_400_000), ("0s", 0)] {
            #expect(try ChannelCompiler.parse(text).kind == .duration(millis: Int64(ms)))
        }
        #expect(try parsed("[\"fire\", \"flood\"]") == "[\"fire\", \"flood\"]")
        #expect(try parsed("[]") == "[]")
        #expect(try parsed("$minSeverity") == "$minSeverity")
        #expect(try parsed("now()") == "now()")
        #expect(try parsed("distance(location, point($lat, $lon))") == "distance(location, point($lat, $lon))")
        #expect(try ChannelCompiler.parse("9223372036854775807").kind == .int(.max))
    }

    @Test func positions() throws {
        let e = try ChannelCompiler.parse("a &&\n  b >= 3")
        guard case .binary(.and, let a, let cmp) = e.kind, case .binary(.greaterOrEqual, let b, let three) = cmp.kind else {
            Issue.record("unexpected tree \(e)")
            return
        }
        #expect(e.location == SourcePosition(line: 1, column: 3))
        #expect(a.location == SourcePosition(line: 1, column: 1))
        #expect(b.location == SourcePosition(line: 2, column: 3))
        #expect(cmp.location == SourcePosition(line: 2, column: 5))
        #expect(three.location == SourcePosition(line: 2, column: 8))
    }

    @Test func roundTrip() throws {
        for text in [
            "distance(location, point($lat, $lon)) <= $radiusKm && severity >= $minSeverity",
            "!(a == null) || -x * 2 + 3.5 / y != z && k in [\"a\", 'b\\n']",
            "time > now() - 90m && startsWith(lower(area), \"n\")",
        ] {
            let tree = try ChannelCompiler.parse(text)
            let again = try ChannelCompiler.parse(tree.description)
            #expect(again.description == tree.description)
        }
    }

    @Test(arguments: [
        ("severity >=", "at 1:12: the expression ends too early"),
        ("\"unterminated", "at 1:1: unterminated string"),
        ("kind == 'abc", "at 1:9: unterminated string"),
        ("foo(", "at 1:5: the expression ends too early"),
        ("foo(a, ", "at 1:8: the expression ends too early"),
        ("foo(a b)", "at 1:7: expected ')' to close the call of foo at 1:1, found 'b'"),
        ("$", "at 1:1: expected a parameter name after '$'"),
        ("$ x", "at 1:1: expected a parameter name after '$'"),
        ("1 2", "at 1:3: unexpected number 2 after a complete expression"),
        ("", "at 1:1: the expression is empty"),
        ("   \n  ", "at 2:3: the expression is empty"),
        ("a = 1", "at 1:3: unexpected '='; use '==' to compare"),
        ("a & b", "at 1:3: unexpected '&'; use '&&'"),
        ("a | b", "at 1:3: unexpected '|'; use '||'"),
        ("a < b < c", "at 1:7: comparisons cannot be chained"),
        ("(a", "at 1:3: expected ')' to close the '(' at 1:1, found the end of the expression"),
        ("a)", "at 1:2: unmatched ')'"),
        ("[1, 2", "at 1:6: expected ']' to close the list at 1:1"),
        ("1.", "at 1:2: expected a digit after the decimal point"),
        ("1.5h", "at 1:1: a duration must be a whole number"),
        ("10x", "at 1:3: unexpected 'x' after a number"),
        ("99999999999999999999", "at 1:1: integer 99999999999999999999 is too large"),
        ("a == \"\\q\"", "at 1:7: unknown escape '\\q'"),
        ("a # b", "at 1:3: unexpected character '#'"),
        ("a &&\n  b >= )", "at 2:8: expected a value"),
        ("a == !b", "at 1:6: '!' cannot appear here"),
        ("&& a", "at 1:1: expected a value"),
    ])
    func syntaxErrors(text: String, expected: String) {
        let message = parseError(text)
        #expect(message?.hasPrefix(expected) == true, "got \(message ?? "no error")")
    }

    @Test func nestingLimits() throws {
        let deep = String(repeating: "(", count: 40) + "a" + String(repeating: ")", count: 40)
        #expect(try parsed(deep) == "a")
        let tooDeep = String(repeating: "(", count: 1000) + "a" + String(repeating: ")", count: 1000)
        #expect(parseError(tooDeep)?.contains("nested too deeply") == true)
        #expect(parseError(String(repeating: "!", count: 10_000) + "a")?.contains("nested too deeply") == true)
        #expect(parseError(String(repeating: "-", count: 10_000) + "a")?.contains("nested too deeply") == true)
        let longChain = (0..<1000).map { "a\($0)" }.joined(separator: " && ")
        #expect(parseError(longChain)?.contains("too large") == true)
        let okChain = (0..<100).map { "a\($0)" }.joined(separator: " && ")
        #expect(parseError(okChain) == nil)
        #expect(parseError(String(repeating: "a", count: 70_000))?.contains("longer than") == true)
    }
}
