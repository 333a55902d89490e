/// A single-pass RFC 8259 JSON parser over UTF-8 bytes, producing `JSONValue`.
///
/// It replaces decoding through Foundation's `JSONDecoder`, whose `JSONValue.init(from:)` probes
/// every value with thrown-and-caught errors. Behaviour:
/// - numbers without fraction or exponent that fit `Int64` become `.int`; every other number
///   (a fraction, an exponent, or an integer beyond `Int64`) becomes `.double`, so `1.0` is
///   `.double(1)`, where Foundation gave `.int(1)`. `JSONValue.intValue` and `doubleValue` accept
///   both. Numbers beyond `Double`'s range are rejected, as Foundation does.
/// - strings: every escape, `\uXXXX` with surrogate pairs; lone surrogates, unescaped control
///   characters and invalid UTF-8 are rejected.
/// - duplicate object keys: the last one wins (Foundation's decoder kept the first).
/// - a leading UTF-8 byte order mark is skipped (RFC 8259 §8.1 allows it; Foundation does too);
///   trailing commas and anything after the document are rejected.
/// - nesting deeper than `maxDepth` is rejected, so hostile input cannot exhaust the stack.
///
/// Errors are `bad_json` with the byte offset: "malformed JSON at byte N: what".
struct JSONParser {
    static let maxDepth = 512

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index: Int
    private var depth: Int

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        self.index = 0
        self.depth = 0
    }

    /// Parses one complete document.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(TocsinError) -> JSONValue {
        var parser = JSONParser(bytes)
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
            parser.index = 3
        }
        let value = try parser.parseValue()
        parser.skipWhitespace()
        if parser.index < bytes.count {
            throw parser.error("unexpected \(parser.describeByte(at: parser.index)) after the document")
        }
        return value
    }

    // MARK: - Values

    private mutating func parseValue() throws(TocsinError) -> JSONValue {
        skipWhitespace()
        guard index < bytes.count else { throw error("unexpected end of input, expected a value") }
        switch bytes[index] {
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        default:
            throw error("unexpected \(describeByte(at: index)), expected a value")
        }
    }

    private mutating func parseObject() throws(TocsinError) -> JSONValue {
        try enterContainer()
        index += 1  // {
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return .object([:])
        }
        // 8 buckets: most objects in one allocation, without regrowing and rehashing.
        var object = [String: JSONValue](minimumCapacity: 6)
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw error(
                    index < bytes.count
                        ? "unexpected \(describeByte(at: index)), expected an object key"
                        : "unexpected end of input, expected an object key")
            }
            let key = try parseString()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                throw error(
                    index < bytes.count ? "unexpected \(describeByte(at: index)), expected ':'" : "unexpected end of input, expected ':'")
            }
            index += 1
            object[key] = try parseValue()
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in an object") }
            switch bytes[index] {
            case UInt8(ascii: ","):
                index += 1
            case UInt8(ascii: "}"):
                index += 1
                depth -= 1
                return .object(object)
            default:
                throw error("unexpected \(describeByte(at: index)), expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray() throws(TocsinError) -> JSONValue {
        try enterContainer()
        index += 1  // [
        var array: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return .array(array)
        }
        while true {
            array.append(try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in an array") }
            switch bytes[index] {
            case UInt8(ascii: ","):
                index += 1
            case UInt8(ascii: "]"):
                index += 1
                depth -= 1
                return .array(array)
            default:
                throw error("unexpected \(describeByte(at: index)), expected ',' or ']'")
            }
        }
    }

    private mutating func enterContainer() throws(TocsinError) {
        depth += 1
        if depth > Self.maxDepth {
            throw error("nesting deeper than \(Self.maxDepth) levels")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(TocsinError) {
        let count = literal.utf8CodeUnitCount
        let expected = literal.utf8Start
        for k in 0..<count {
            guard index + k < bytes.count, bytes[index + k] == expected[k] else {
                let at = index + k
                let found = at < bytes.count ? describeByte(at: at) : "end of input"
                index = at
                throw error("unexpected \(found), expected '\(literal)'")
            }
        }
        index += count
    }

    @inline(__always)
    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): index += 1
            default: return
            }
        }
    }

    // MARK: - Strings

    /// Parses a string starting at its opening quote; leaves `index` after the closing quote.
    private mutating func parseString() throws(TocsinError) -> String {
        let start = index + 1
        var i = start
        var ascii = true
        // Fast path: no escapes. Scan to the closing quote, then build the String from the slice.
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                index = i + 1
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<i])
                if ascii {
                    return String(decoding: slice, as: UTF8.self)
                }
                if let s = String(validating: slice, as: UTF8.self) {
                    return s
                }
                index = Self.firstInvalidUTF8(in: bytes, from: start, to: i) ?? start
                throw error("invalid UTF-8 in a string")
            }
            if b == UInt8(ascii: "\\") {
                return try parseEscapedString(start: start, firstEscape: i)
            }
            if b < 0x20 {
                index = i
                throw error("unescaped control character \(describeByte(at: i)) in a string")
            }
            if b >= 0x80 { ascii = false }
            i += 1
        }
        index = i
        throw error("unexpected end of input in a string")
    }

    /// The slow path: a string with escapes. Raw runs are copied, escapes decoded.
    private mutating func parseEscapedString(start: Int, firstEscape: Int) throws(TocsinError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(firstEscape - start + 16)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<firstEscape]))
        var ascii = true
        for k in start..<firstEscape where bytes[k] >= 0x80 {
            ascii = false
            break
        }
        var i = firstEscape
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                if !ascii, let bad = Self.firstInvalidUTF8(in: bytes, from: start, to: i) {
                    // Escapes are ASCII, so checking the raw text checks every raw run.
                    index = bad
                    throw error("invalid UTF-8 in a string")
                }
                index = i + 1
                return String(decoding: out, as: UTF8.self)
            }
            if b == UInt8(ascii: "\\") {
                guard i + 1 < bytes.count else {
                    index = i + 1
                    throw error("unexpected end of input in a string")
                }
                let e = bytes[i + 1]
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4(at: i + 2)
                    var consumed = 6
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 7 < bytes.count, bytes[i + 6] == UInt8(ascii: "\\"), bytes[i + 7] == UInt8(ascii: "u") else {
                            index = i
                            throw error("lone surrogate \\u\(Self.hex(scalar)) (a high surrogate must be followed by a \\u low surrogate)")
                        }
                        let low = try hex4(at: i + 8)
                        guard (0xDC00...0xDFFF).contains(low) else {
                            index = i
                            throw error("lone surrogate \\u\(Self.hex(scalar)) (followed by \\u\(Self.hex(low)), not a low surrogate)")
                        }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        consumed = 12
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        index = i
                        throw error("lone surrogate \\u\(Self.hex(scalar))")
                    }
                    Self.appendUTF8(scalar, to: &out)
                    i += consumed
                    continue
                default:
                    index = i
                    throw error("invalid escape: \(describeByte(at: i + 1)) after a backslash")
                }
                i += 2
                continue
            }
            if b < 0x20 {
                index = i
                throw error("unescaped control character \(describeByte(at: i)) in a string")
            }
            if b >= 0x80 { ascii = false }
            out.append(b)
            i += 1
        }
        index = i
        throw error("unexpected end of input in a string")
    }

    /// Four hex digits at `at`, as a code unit.
    private mutating func hex4(at: Int) throws(TocsinError) -> UInt32 {
        var value: UInt32 = 0
        for k in at..<(at + 4) {
            guard k < bytes.count else {
                index = k
                throw error("unexpected end of input in a \\u escape")
            }
            let b = bytes[k]
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default:
                index = k
                throw error("unexpected \(describeByte(at: k)) in a \\u escape, expected a hex digit")
            }
            value = value << 4 | digit
        }
        return value
    }

    private static func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
        switch scalar {
        case ..<0x80:
            out.append(UInt8(scalar))
        case ..<0x800:
            out.append(UInt8(0xC0 | scalar >> 6))
            out.append(UInt8(0x80 | scalar & 0x3F))
        case ..<0x10000:
            out.append(UInt8(0xE0 | scalar >> 12))
            out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        default:
            out.append(UInt8(0xF0 | scalar >> 18))
            out.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// The offset of the first byte of the first ill-formed UTF-8 sequence in `bytes[from..<to]`
    /// (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or nil if well-formed.
    static func firstInvalidUTF8(in bytes: UnsafeBufferPointer<UInt8>, from: Int, to end: Int) -> Int? {
        var i = from
        while i < end {
            let b0 = bytes[i]
            if b0 < 0x80 {
                i += 1
                continue
            }
            let length: Int
            var low: UInt8 = 0x80
            var high: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0:
                length = 3
                low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED:
                length = 3
                high = 0x9F
            case 0xF0:
                length = 4
                low = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4:
                length = 4
                high = 0x8F
            default: return i
            }
            guard i + length <= end else { return i }
            let b1 = bytes[i + 1]
            guard b1 >= low, b1 <= high else { return i }
            for k in 2..<length where bytes[i + k] & 0xC0 != 0x80 {
                return i
            }
            i += length
        }
        return nil
    }

    // MARK: - Numbers

    private static let exactPowersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func parseNumber() throws(TocsinError) -> JSONValue {
        let start = index
        var i = index
        let negative = bytes[i] == UInt8(ascii: "-")
        if negative { i += 1 }

        // Significant digits accumulate into `mantissa` while they fit (19 digits always do).
        var mantissa: UInt64 = 0
        var significantDigits = 0
        var truncated = false
        var decimalExponent = 0  // the power of ten the mantissa is scaled by

        guard i < bytes.count, bytes[i] &- UInt8(ascii: "0") < 10 else {
            index = i
            throw error(
                i < bytes.count ? "unexpected \(describeByte(at: i)) in a number, expected a digit" : "unexpected end of input in a number")
        }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
            if i < bytes.count, bytes[i] &- UInt8(ascii: "0") < 10 {
                index = i
                throw error("leading zero in a number")
            }
        } else {
            while i < bytes.count {
                let d = bytes[i] &- UInt8(ascii: "0")
                if d >= 10 { break }
                if significantDigits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(d)
                    significantDigits += 1
                } else {
                    truncated = true
                    decimalExponent += 1
                }
                i += 1
            }
        }

        var isInteger = true
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            isInteger = false
            i += 1
            let fractionStart = i
            while i < bytes.count {
                let d = bytes[i] &- UInt8(ascii: "0")
                if d >= 10 { break }
                if significantDigits < 19 {
                    if mantissa != 0 || d != 0 {
                        mantissa = mantissa &* 10 &+ UInt64(d)
                        significantDigits += 1
                    }
                    decimalExponent -= 1
                } else if d != 0 {
                    truncated = true
                }
                i += 1
            }
            if i == fractionStart {
                index = i
                throw error(
                    i < bytes.count
                        ? "unexpected \(describeByte(at: i)) in a number, expected a digit after '.'"
                        : "unexpected end of input in a number, expected a digit after '.'")
            }
        }

        if i < bytes.count, bytes[i] | 0x20 == UInt8(ascii: "e") {
            isInteger = false
            i += 1
            var exponentNegative = false
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") {
                exponentNegative = bytes[i] == UInt8(ascii: "-")
                i += 1
            }
            let exponentStart = i
            var exponent = 0
            while i < bytes.count {
                let d = bytes[i] &- UInt8(ascii: "0")
                if d >= 10 { break }
                if exponent < 100_000 { exponent = exponent * 10 + Int(d) }
                i += 1
            }
            if i == exponentStart {
                index = i
                throw error(
                    i < bytes.count
                        ? "unexpected \(describeByte(at: i)) in a number, expected a digit in the exponent"
                        : "unexpected end of input in a number, expected a digit in the exponent")
            }
            decimalExponent += exponentNegative ? -exponent : exponent
        }
        index = i

        if isInteger && !truncated {
            if negative {
                if mantissa <= UInt64(Int64.max) { return .int(-Int64(mantissa)) }
                if mantissa == UInt64(Int64.max) + 1 { return .int(.min) }
            } else if mantissa <= UInt64(Int64.max) {
                return .int(Int64(mantissa))
            }
        }

        // Clinger's fast path: an exactly representable mantissa scaled by an exactly
        // representable power of ten is one correctly rounded operation, the same as strtod's.
        if !truncated, mantissa <= 1 << 53, decimalExponent >= -22, decimalExponent <= 22 {
            var d = Double(mantissa)
            if decimalExponent < 0 {
                d /= Self.exactPowersOfTen[-decimalExponent]
            } else {
                d *= Self.exactPowersOfTen[decimalExponent]
            }
            return .double(negative ? -d : d)
        }

        // Everything else: the standard library's correctly rounded, locale-independent conversion.
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else {
            index = start
            throw error("number \(text.prefix(40)) is out of range")
        }
        return .double(d)
    }

    // MARK: - Errors

    private func error(_ what: String) -> TocsinError {
        TocsinError(.badJSON, "malformed JSON at byte \(index): \(what)")
    }

    private func describeByte(at i: Int) -> String {
        let b = bytes[i]
        if b >= 0x20 && b < 0x7F {
            return "'\(Character(Unicode.Scalar(b)))'"
        }
        return "byte 0x\(Self.hex(UInt32(b), width: 2))"
    }

    private static func hex(_ value: UInt32, width: Int = 4) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
