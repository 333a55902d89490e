import Foundation
import PropertyBased
import Testing

@testable import TocsinCore

/// The parser against Foundation's `JSONDecoder` (the path it replaced) on random documents,
/// random escapings of tricky strings and random number texts; and byte-mutation fuzzing.
///
/// The one intended difference: Foundation decodes a whole number written with a fraction or an
/// exponent (`1.0`, `1e2`, `-0.0`, `1e-400`, `9007199254740993.0`) as the exact `.int`, the parser
/// as the correctly rounded `.double`. `sameAsFoundation` accepts exactly that (`.double(d)` for
/// `.int(i)` when `Double(i) == d`); everything else must match exactly, strings byte for byte.
struct JSONDifferentialTests {
    @Test func randomDocumentsParseAsFoundationDoes() async {
        await propertyCheck(count: 400, input: Gen.int(in: 0...Int.max)) { seed in
            var g = JSONGenerator(seed: seed)
            let value = g.value(depth: 0)
            let text = g.write(value)
            let parsed = try #require(try? JSONValue.parse(text), "rejected \(text.debugDescription)")
            #expect(JSONGenerator.identical(parsed, value), "\(text.debugDescription)")
            let reference = try #require(foundationParse(Array(text.utf8)), "Foundation rejected \(text.debugDescription)")
            #expect(JSONGenerator.sameAsFoundation(parsed, reference), "\(text.debugDescription)")
            // The compact writer round-trips exactly.
            #expect(JSONGenerator.identical(try JSONValue.parse(value.serialized), value))
        }
    }

    @Test func trickyStringsParseAsFoundationDoes() async {
        await propertyCheck(count: 500, input: Gen.int(in: 0...Int.max)) { seed in
            var g = JSONGenerator(seed: seed)
            let string = g.trickyString()
            let text = g.escaped(string)
            let parsed = try #require(try? JSONValue.parse(text), "rejected \(text.debugDescription)")
            #expect(parsed.stringValue.map { Array($0.utf8) } == Array(string.utf8), "\(text.debugDescription)")
            let reference = try #require(foundationParse(Array(text.utf8)))
            #expect(JSONGenerator.identical(parsed, reference), "\(text.debugDescription)")
        }
    }

    @Test func numbersParseAsFoundationDoes() async {
        let fixed = [
            "0", "-0", "0.0", "-0.0", "1", "-1", "1.5", "0.1", "52.37", "4.9", "1e10", "1E-7", "1e22", "1e23",
            "123456789012345678", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
            "-9223372036854775809", "18446744073709551615", "18446744073709551616", "1e308", "1.7976931348623157e308",
            "1.7976931348623158e308", "2.2250738585072014e-308", "2.2250738585072011e-308", "4.9e-324", "5e-324",
            "2.4703282292062327e-324", "2.4703282292062328e-324", "1e-400", "0.30000000000000004", "9007199254740993",
            "9007199254740992.5", "9007199254740993.0", "123.456e-7", "1.0000000000000002", "0.1e1", "100e-2",
            "1e0", "12345678901234567890e-5", "0.0000000000000000000000000000000000001", "7.006492321624086e-46",
            "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ]
        for text in fixed {
            expectSameAsFoundation(text)
        }
        expectSameAsFoundation("-451162360528878240.40")  // a rounding tie Foundation gets one ulp off
        await propertyCheck(count: 2000, input: Gen.int(in: 0...Int.max)) { seed in
            var g = JSONGenerator(seed: seed)
            expectSameAsFoundation(g.numberText())
        }
    }

    /// Random mutations of valid documents: never a crash; every error is `bad_json` at an offset
    /// inside the input; whatever the parser accepts, Foundation accepts too, and it round-trips.
    @Test func mutatedDocumentsNeverCrash() async {
        await propertyCheck(count: 4000, input: Gen.int(in: 0...Int.max)) { seed in
            var g = JSONGenerator(seed: seed)
            var bytes = Array(g.write(g.value(depth: 0), escapingRandomly: true).utf8)
            for _ in 0..<Int.random(in: 1...4, using: &g.rng) {
                g.mutate(&bytes)
            }
            do throws(TocsinError) {
                let value = try JSONValue.parse(bytes)
                #expect(foundationParse(bytes) != nil, "Foundation rejected \(bytes)")
                let reparsed = try JSONValue.parse(value.serialized)
                #expect(JSONGenerator.identical(reparsed, value))
            } catch {
                #expect(error.code == .badJSON)
                let prefix = "malformed JSON at byte "
                #expect(error.message.hasPrefix(prefix), "\(error.message)")
                let offset = Int(error.message.dropFirst(prefix.count).prefix { $0.isNumber })
                #expect(offset.map { $0 <= bytes.count } == true, "\(error.message) for \(bytes.count) bytes")
            }
        }
    }

    @Test func randomBytesNeverCrash() async {
        await propertyCheck(count: 3000, input: Gen.int(in: 0...Int.max)) { seed in
            var g = JSONGenerator(seed: seed)
            let alphabet = Array(#"{}[]",:0123456789-+.eE tfrunl\a"#.utf8) + [0x00, 0x0A, 0x80, 0xC3, 0xA9, 0xED, 0xF0, 0xFF]
            let bytes = (0..<Int.random(in: 0...40, using: &g.rng)).map { _ in g.pick(alphabet) }
            do throws(TocsinError) {
                _ = try JSONValue.parse(bytes)
            } catch {
                #expect(error.code == .badJSON)
            }
        }
    }
}

/// The parse path this parser replaced, kept as the reference.
private func foundationParse(_ bytes: [UInt8]) -> JSONValue? {
    try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
}

private func expectSameAsFoundation(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let mine = try? JSONValue.parse(text)
    let reference = foundationParse(Array(text.utf8))
    #expect(
        (mine == nil) == (reference == nil), "\(text): \(String(describing: mine)) vs \(String(describing: reference))",
        sourceLocation: sourceLocation)
    if let mine, let reference {
        // Foundation turns a number whose double value is whole into an Int64 and drops a
        // fraction below the double's precision ("-451162360528878240.40" → .int(…240)); when
        // that lands on a rounding tie, the reference is one ulp off. The correctly rounded
        // double of the text is then the reference.
        if case .double(let d) = mine, case .int = reference, let exact = Double(text) {
            #expect(d == exact, "\(text): \(mine) vs Double(text) \(exact)", sourceLocation: sourceLocation)
            return
        }
        #expect(JSONGenerator.sameAsFoundation(mine, reference), "\(text): \(mine) vs \(reference)", sourceLocation: sourceLocation)
        if !text.contains(where: { ".eE".contains($0) }), case .int = reference {
            #expect(mine == reference, "\(text)", sourceLocation: sourceLocation)
        }
    }
}

/// Random JSON documents and texts, driven by a seeded SplitMix64.
private struct JSONGenerator {
    typealias Random = SplitMix

    var rng: Random

    init(seed: Int) { rng = Random(seed: seed) }

    mutating func chance(_ n: Int) -> Bool { Int.random(in: 0..<n, using: &rng) == 0 }
    mutating func pick<T>(_ items: [T]) -> T { items.randomElement(using: &rng)! }

    /// Equal, with strings compared byte for byte (`==` on `String` is canonical equivalence).
    static func identical(_ a: JSONValue, _ b: JSONValue) -> Bool {
        equal(a, b, foundationNumbers: false)
    }

    /// Identical, except that the parser's `.double(d)` matches Foundation's `.int(i)` when `d` is
    /// `i` correctly rounded: Foundation's reading of whole numbers written `1.0` or `1e2`.
    static func sameAsFoundation(_ mine: JSONValue, _ reference: JSONValue) -> Bool {
        equal(mine, reference, foundationNumbers: true)
    }

    private static func equal(_ a: JSONValue, _ b: JSONValue, foundationNumbers: Bool) -> Bool {
        func identical(_ a: JSONValue, _ b: JSONValue) -> Bool { equal(a, b, foundationNumbers: foundationNumbers) }
        switch (a, b) {
        case (.double(let d), .int(let i)) where foundationNumbers: return d.rounded() == d && Double(i) == d
        case (.string(let x), .string(let y)): return x.utf8.elementsEqual(y.utf8)
        case (.double(let x), .double(let y)): return x == y
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { identical($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count
                && x.allSatisfy { key, value in
                    y.first { $0.key.utf8.elementsEqual(key.utf8) }.map { identical(value, $0.value) } ?? false
                }
        default: return a == b
        }
    }

    // MARK: Values

    mutating func value(depth: Int) -> JSONValue {
        let leaf = depth >= 5 || chance(depth == 0 ? 4 : 2)
        if !leaf {
            if chance(2) {
                return .array((0..<Int.random(in: 0...5, using: &rng)).map { _ in value(depth: depth + 1) })
            }
            var o: [String: JSONValue] = [:]
            for _ in 0..<Int.random(in: 0...5, using: &rng) {
                o[chance(3) ? trickyString() : pick(["type", "seq", "id", "a", "", "location", "lat"])] = value(depth: depth + 1)
            }
            return .object(o)
        }
        switch Int.random(in: 0..<7, using: &rng) {
        case 0: return .null
        case 1: return .bool(chance(2))
        case 2:
            return .int(chance(4) ? pick([0, -1, .max, .min, 9_007_199_254_740_993]) : Int64.random(in: -100_000...100_000, using: &rng))
        case 3: return .double(randomDouble())
        default: return .string(trickyString())
        }
    }

    mutating func randomDouble() -> Double {
        switch Int.random(in: 0..<5, using: &rng) {
        case 0:
            return pick([
                0.1, -1.5, 52.37, 4.9, 1e300, -2.5e-300, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 2, -0.0, 1e15, 123456789.125,
            ])
        case 1: return Double(Int.random(in: -1000...1000, using: &rng)) / 100
        case 2:
            return Double(
                bitPattern: UInt64.random(in: 0...UInt64.max, using: &rng) & ~(0x7FF << 52)
                    | (UInt64.random(in: 1...0x7FE, using: &rng) << 52))
        default: return Double.random(in: -1e6...1e6, using: &rng)
        }
    }

    static let pieces = [
        "a", "Z", "type", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{0}", "\u{1}", "\u{8}", "\u{C}", "\u{1F}", "\u{7F}",
        "é", "e\u{301}", "ß", "中文", "😀", "👩‍👩‍👧", "𝄞", "\u{2028}", "\u{2029}", "\u{FFFD}", "\u{FFFF}", "\u{E000}",
        "\u{10FFFF}", "\u{80}", "\u{7FF}", "\u{800}", "\u{FEFF}", "ab\\u0041",
    ]

    mutating func trickyString() -> String {
        (0..<Int.random(in: 0...8, using: &rng)).map { _ in pick(Self.pieces) }.joined()
    }

    /// A string literal spelling each scalar raw, as a short escape or as `\uXXXX`, at random.
    mutating func escaped(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            let short: String? =
                switch scalar {
                case "\"": "\\\""
                case "\\": "\\\\"
                case "/": "\\/"
                case "\u{8}": "\\b"
                case "\u{C}": "\\f"
                case "\n": "\\n"
                case "\r": "\\r"
                case "\t": "\\t"
                default: nil
                }
            let mustEscape = scalar.value < 0x20 || scalar == "\"" || scalar == "\\"
            if !mustEscape && chance(2) {
                out.unicodeScalars.append(scalar)
            } else if let short, chance(2) {
                out += short
            } else {
                let upper = chance(2)
                for unit in String(scalar).utf16 {
                    let hex = String(unit, radix: 16, uppercase: upper)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            }
        }
        return out + "\""
    }

    mutating func whitespace() -> String {
        chance(2) ? "" : pick([" ", "\n", "\t", "\r\n", "  ", " \t\n\r "])
    }

    /// Writes `value` with random whitespace between tokens, members in random order, and
    /// strings escaped by `JSONWriter` or, if asked, at random.
    mutating func write(_ value: JSONValue, escapingRandomly: Bool = false) -> String {
        var out = whitespace()
        write(value, escapingRandomly: escapingRandomly, into: &out)
        return out + whitespace()
    }

    private mutating func write(_ value: JSONValue, escapingRandomly: Bool, into out: inout String) {
        func string(_ s: String, into out: inout String) {
            if escapingRandomly && chance(2) {
                out += escaped(s)
            } else {
                JSONWriter.writeString(s, into: &out)
            }
        }
        switch value {
        case .string(let s): string(s, into: &out)
        case .array(let a):
            out += "[" + whitespace()
            for (i, element) in a.enumerated() {
                if i > 0 { out += whitespace() + "," + whitespace() }
                write(element, escapingRandomly: escapingRandomly, into: &out)
            }
            out += whitespace() + "]"
        case .object(let o):
            out += "{" + whitespace()
            for (i, (key, element)) in o.shuffled(using: &rng).enumerated() {
                if i > 0 { out += whitespace() + "," + whitespace() }
                string(key, into: &out)
                out += whitespace() + ":" + whitespace()
                write(element, escapingRandomly: escapingRandomly, into: &out)
            }
            out += whitespace() + "}"
        default: JSONWriter.write(value, into: &out)
        }
    }

    /// A random number text, valid by the grammar; some are beyond `Double`'s range.
    mutating func numberText() -> String {
        func digits(_ n: Int, into g: inout JSONGenerator) -> String {
            String((0..<n).map { _ in g.pick(Array("0123456789")) })
        }
        var text = chance(3) ? "-" : ""
        let intDigits = chance(4) ? 1 : Int.random(in: 1...25, using: &rng)
        let intPart = digits(intDigits, into: &self)
        text += intPart.first == "0" && intPart.count > 1 ? "1" + intPart.dropFirst() : intPart
        if chance(2) { text += "." + digits(Int.random(in: 1...25, using: &rng), into: &self) }
        if chance(2) {
            text += pick(["e", "E"]) + pick(["", "+", "-"])
            text += String(chance(3) ? Int.random(in: 0...400, using: &rng) : Int.random(in: 0...30, using: &rng))
        }
        return text
    }

    // MARK: Mutations

    mutating func mutate(_ bytes: inout [UInt8]) {
        let interesting: [UInt8] = Array(#"{}[]",:0-.eE\u"#.utf8) + [0x00, 0x1F, 0x7F, 0x80, 0xBF, 0xC0, 0xC3, 0xED, 0xF0, 0xF4, 0xFF]
        let byte = chance(2) ? pick(interesting) : UInt8.random(in: 0...255, using: &rng)
        guard !bytes.isEmpty else {
            bytes.append(byte)
            return
        }
        let i = Int.random(in: 0..<bytes.count, using: &rng)
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: bytes[i] = byte
        case 1: bytes.insert(byte, at: i)
        case 2: bytes.remove(at: i)
        case 3: bytes.removeSubrange(i...)
        default:
            let j = Int.random(in: i...bytes.count, using: &rng)
            bytes.insert(contentsOf: bytes[i..<j], at: Int.random(in: 0...bytes.count, using: &rng))
        }
    }
}
