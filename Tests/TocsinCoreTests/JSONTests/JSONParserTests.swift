import Foundation
import Testing

@testable import TocsinCore

/// The hand-written parser behind `JSONValue.parse`: valid documents of every kind, each class of
/// malformed input rejected with `bad_json` and the byte offset, and the nesting limit.
struct JSONParserTests {
    @Test(
        arguments: [
            ("null", JSONValue.null),
            ("true", .bool(true)),
            ("false", .bool(false)),
            ("0", .int(0)),
            ("-0", .int(0)),
            ("42", .int(42)),
            ("-17", .int(-17)),
            ("9223372036854775807", .int(.max)),
            ("-9223372036854775808", .int(.min)),
            (#""""#, .string("")),
            (#""plain""#, .string("plain")),
            ("[]", .array([])),
            ("{}", .object([:])),
            (" \t\r\n[ 1 , \"a\" , null ]\n ", .array([1, "a", nil])),
            (#"{"a":{"b":[true,{"c":[]}]},"d":-1.5}"#, ["a": ["b": [true, ["c": []]]], "d": -1.5]),
            (#"[[[[]]],{},[{}]]"#, [[[[]]], [:], [[:]]]),
            (#"{"":0}"#, ["": 0]),
            ("\u{FEFF}[1]", [1]),
        ] as [(String, JSONValue)])
    func parsesValidDocuments(text: String, expected: JSONValue) throws {
        #expect(try JSONValue.parse(text) == expected)
        #expect(try JSONValue.parse(Array(text.utf8)) == expected)
    }

    /// Integers that fit `Int64` are `.int`; a fraction or an exponent makes a `.double` even when
    /// the value is whole (Foundation's decoder gave `.int` for `1.0`, `1e2`, `-0.0`); integers
    /// beyond `Int64` become `.double`.
    @Test(
        arguments: [
            ("1.0", JSONValue.double(1)),
            ("-0.0", .double(-0.0)),
            ("1e2", .double(100)),
            ("1E+2", .double(100)),
            ("25e-1", .double(2.5)),
            ("1.5e3", .double(1500)),
            ("0.1", .double(0.1)),
            ("52.37", .double(52.37)),
            ("4.9", .double(4.9)),
            ("-123.456e-7", .double(-123.456e-7)),
            ("9223372036854775808", .double(9.223372036854775808e18)),
            ("-9223372036854775809", .double(-9.223372036854775809e18)),
            ("123456789012345678901234567890", .double(1.2345678901234568e29)),
            ("0.30000000000000004", .double(0.30000000000000004)),
            ("1.7976931348623157e308", .double(.greatestFiniteMagnitude)),
            ("4.9e-324", .double(.leastNonzeroMagnitude)),
            ("1e-400", .double(0)),
            ("0.000000000000000000000000000001", .double(1e-30)),
        ] as [(String, JSONValue)])
    func classifiesNumbers(text: String, expected: JSONValue) throws {
        let parsed = try JSONValue.parse(text)
        #expect(parsed == expected)
        if case .double(let d) = parsed, case .double(let e) = expected {
            #expect(d.bitPattern == e.bitPattern, "\(text): \(d) vs \(e)")
        }
    }

    @Test func schemaFieldsAcceptWholeDoublesAsIntsAndIntsAsDoubles() throws {
        func convert(_ text: String, _ type: FieldType) throws(TocsinError) -> Value {
            try Value(json: JSONValue.parse(text), as: type, what: "field", code: .schemaViolation)
        }
        #expect(try convert("2.0", .int) == .int(2))
        #expect(try convert("2e0", .int) == .int(2))
        #expect(try convert("2", .double) == .double(2))
        #expect(try convert("2.5", .double) == .double(2.5))
        #expect(throws: TocsinError.self) { try convert("2.5", .int) }
        let point = try convert(#"{"lat":52,"lon":4.9}"#, .geo)
        #expect(point == .geo(GeoPoint(lat: 52, lon: 4.9)))
    }

    @Test func stringEscapes() throws {
        let cases: [(String, String)] = [
            (#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{C}\n\r\t"),
            (#""\u0000\u001f\u0041\u00e9\u00E9\u4e2d""#, "\u{0}\u{1F}Aéé中"),
            (#""\ud83d\ude00 \uD834\uDD1E""#, "😀 𝄞"),
            (#""\udbff\udfff""#, "\u{10FFFF}"),
            (#""a\nb😀c\u00e9é""#, "a\nb😀céé"),
            ("\"raw 中文 😀 \u{2028}\"", "raw 中文 😀 \u{2028}"),
            (#""\u2028\uFFFF\uE000""#, "\u{2028}\u{FFFF}\u{E000}"),
        ]
        for (text, expected) in cases {
            let parsed = try JSONValue.parse(text)
            #expect(parsed == .string(expected), "\(text)")
            #expect(parsed.stringValue.map { Array($0.utf8) } == Array(expected.utf8), "\(text)")
        }
        #expect(try JSONValue.parse(#"{"k\u00e9y\n":1}"#) == ["kéy\n": 1])
    }

    @Test func duplicateKeysLastWins() throws {
        #expect(try JSONValue.parse(#"{"a":1,"b":0,"a":2}"#) == ["a": 2, "b": 0])
    }

    @Test func acceptsEveryKindOfInputCollection() throws {
        let text = #"{"type":"ack","subscription":"s_1","seq":12345}"#
        let expected: JSONValue = ["type": "ack", "subscription": "s_1", "seq": 12345]
        let bytes = Array(text.utf8)
        #expect(try JSONValue.parse(text) == expected)
        #expect(try JSONValue.parse(bytes) == expected)
        #expect(try JSONValue.parse(bytes[...]) == expected)
        #expect(try JSONValue.parse(Data(bytes)) == expected)
        // No contiguous storage: the parser copies into an array.
        #expect(try JSONValue.parse(text.utf8.lazy.map { $0 }) == expected)
        #expect(throws: TocsinError.self) { try JSONValue.parse("[1,".utf8.lazy.map { $0 }) }
    }

    /// Each malformed document with the byte offset its error names.
    @Test(
        arguments: [
            ("", 0, "end of input"),
            ("   ", 3, "end of input"),
            ("01", 1, "leading zero"),
            ("-01", 2, "leading zero"),
            ("-", 1, "end of input in a number"),
            ("-a", 1, "expected a digit"),
            ("+1", 0, "expected a value"),
            ("1.", 2, "after '.'"),
            ("1.e5", 2, "after '.'"),
            (".5", 0, "'.'"),
            ("1e", 2, "exponent"),
            ("1e+", 3, "exponent"),
            ("[1e]", 3, "exponent"),
            ("1e400", 0, "out of range"),
            ("-1e400", 0, "out of range"),
            ("NaN", 0, "expected a value"),
            ("Infinity", 0, "expected a value"),
            ("tru", 3, "end of input"),
            ("trUe", 2, "'U'"),
            ("nul", 3, "end of input"),
            ("[1,]", 3, "expected a value"),
            ("[1 2]", 3, "expected ',' or ']'"),
            ("[", 1, "end of input"),
            ("[1", 2, "end of input in an array"),
            ("{", 1, "end of input"),
            (#"{"a" 1}"#, 5, "expected ':'"),
            (#"{"a":1,}"#, 7, "expected an object key"),
            (#"{"a":1 "b":2}"#, 7, "expected ',' or '}'"),
            ("{a:1}", 1, "expected an object key"),
            (#"{"a":}"#, 5, "expected a value"),
            ("[1] x", 4, "after the document"),
            ("1 2", 2, "after the document"),
            ("{}}", 2, "after the document"),
            ("[1]\u{0}", 3, "after the document"),
            ("\u{A0}1", 0, "byte 0xC2"),
            (#""abc"#, 4, "end of input in a string"),
            ("\"a\u{1}b\"", 2, "control character byte 0x01"),
            ("\"tab\tin\"", 4, "control character byte 0x09"),
            ("\"line\nbreak\"", 5, "control character"),
            (#""a\x""#, 2, "invalid escape"),
            (#""\"#, 2, "end of input in a string"),
            (#""\u12G4""#, 5, "hex digit"),
            (#""\u12"#, 5, #"end of input in a \u escape"#),
            (#""\ud800""#, 1, "lone surrogate"),
            (#""ab\udc00""#, 3, "lone surrogate"),
            (#""\ud800\u0041""#, 1, "lone surrogate"),
            (#""\ud800x""#, 1, "lone surrogate"),
            (#""\ud800\ud800""#, 1, "lone surrogate"),
            (#"["\udfff"]"#, 2, "lone surrogate"),
        ] as [(String, Int, String)])
    func rejectsMalformedDocuments(text: String, offset: Int, what: String) {
        expectRejected(Array(text.utf8), offset: offset, what: what)
    }

    @Test(
        arguments: [
            ([0x22, 0x61, 0xFF, 0x22], 2),  // never valid
            ([0x22, 0xC0, 0x80, 0x22], 1),  // overlong NUL
            ([0x22, 0xE0, 0x80, 0xAF, 0x22], 1),  // overlong '/'
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 1),  // an encoded surrogate
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 1),  // above U+10FFFF
            ([0x22, 0x61, 0xE2, 0x82, 0x22], 2),  // truncated sequence
            ([0x22, 0x80, 0x22], 1),  // lone continuation byte
            ([0x22, 0x5C, 0x6E, 0xC3, 0x22], 3),  // invalid after an escape (slow path)
            ([0x22, 0xC3, 0x5C, 0x6E, 0xA9, 0x22], 1),  // a sequence split by an escape
            ([0xEF, 0xBB, 0x31], 0),  // a broken byte order mark
        ] as [([UInt8], Int)])
    func rejectsInvalidUTF8(bytes: [UInt8], offset: Int) {
        expectRejected(bytes, offset: offset, what: bytes.first == 0x22 ? "invalid UTF-8" : "byte 0xEF")
    }

    @Test func nestingIsLimited() throws {
        let limit = JSONParser.maxDepth
        let deepest = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(throws: Never.self) { try JSONValue.parse(deepest) }
        let deepObjects = String(repeating: #"{"a":"#, count: limit) + "1" + String(repeating: "}", count: limit)
        #expect(throws: Never.self) { try JSONValue.parse(deepObjects) }

        expectRejected(
            Array((String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)).utf8), offset: limit,
            what: "nesting deeper than \(limit)")
        // Hostile inputs far deeper than any stack would take.
        expectRejected(Array(String(repeating: "[", count: 1_000_000).utf8), offset: limit, what: "nesting")
        expectRejected(Array(String(repeating: #"{"a":["#, count: 200_000).utf8), offset: 6 * (limit / 2), what: "nesting")
    }

    @Test func errorsAreBadJSONWithAReadableMessage() {
        do {
            _ = try JSONValue.parse(#"{"type":"hello""#)
            Issue.record("accepted")
        } catch {
            #expect(error.code == .badJSON)
            #expect(error.message == "malformed JSON at byte 15: unexpected end of input in an object")
        }
    }
}

func expectRejected(_ bytes: [UInt8], offset: Int, what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let text = String(decoding: bytes, as: UTF8.self).debugDescription
    do {
        let value = try JSONValue.parse(bytes)
        Issue.record("accepted \(text) as \(value)", sourceLocation: sourceLocation)
    } catch {
        #expect(error.code == .badJSON, sourceLocation: sourceLocation)
        #expect(error.message.hasPrefix("malformed JSON at byte \(offset): "), "\(text): \(error.message)", sourceLocation: sourceLocation)
        #expect(error.message.contains(what), "\(text): \(error.message)", sourceLocation: sourceLocation)
    }
}
