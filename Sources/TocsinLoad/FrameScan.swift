/// Reading the few numbers and strings a load client needs straight from a frame's bytes. A
/// byte scan: Foundation's `range(of:)` costs more than the rest of a notification's handling.
enum FrameScan {
    /// The publish time a benchmark put in an event's description ("t<nanos>").
    static let sentPattern = Array(#""description":"t"#.utf8)

    /// The publish time in `frame`'s event description ("t<nanos>"), if any.
    static func sentNanos(_ frame: String) -> Int64? {
        number(after: sentPattern, in: frame.utf8)
    }

    /// The decimal number right after the first occurrence of `pattern` in `bytes`.
    static func number(after pattern: [UInt8], in bytes: some Collection<UInt8>) -> Int64? {
        bytes.withContiguousStorageIfAvailable { scanNumber(after: pattern, in: $0) }
            ?? Array(bytes).withUnsafeBufferPointer { scanNumber(after: pattern, in: $0) }
    }

    private static func scanNumber(after pattern: [UInt8], in bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        // A plain loop: the standard library's generic firstRange(of:) is ~10x slower here.
        guard let first = pattern.first, bytes.count >= pattern.count else { return nil }
        var i = 0
        while i + pattern.count <= bytes.count {
            if bytes[i] == first, bytes[i..<(i + pattern.count)].elementsEqual(pattern) {
                var j = i + pattern.count
                var value: Int64 = 0
                while j < bytes.count, bytes[j] >= 48, bytes[j] <= 57 {
                    value = value &* 10 &+ Int64(bytes[j] - 48)
                    j += 1
                }
                return j > i + pattern.count ? value : nil
            }
            i += 1
        }
        return nil
    }

    /// How many times `pattern` occurs in `bytes` (not overlapping).
    static func count(_ pattern: [UInt8], in bytes: some Collection<UInt8>) -> Int {
        let scan = { (b: UnsafeBufferPointer<UInt8>) -> Int in
            guard let first = pattern.first, b.count >= pattern.count else { return 0 }
            var found = 0
            var i = 0
            while i + pattern.count <= b.count {
                if b[i] == first, b[i..<(i + pattern.count)].elementsEqual(pattern) {
                    found += 1
                    i += pattern.count
                } else {
                    i += 1
                }
            }
            return found
        }
        return bytes.withContiguousStorageIfAvailable(scan) ?? Array(bytes).withUnsafeBufferPointer(scan)
    }

    /// The string or number value of the first `"name":` in `frame`.
    static func field(_ frame: String, _ name: String) -> String? {
        guard let r = frame.range(of: "\"\(name)\":") else { return nil }
        var rest = frame[r.upperBound...]
        if rest.first == "\"" {
            rest = rest.dropFirst()
            return String(rest.prefix { $0 != "\"" })
        }
        return String(rest.prefix { $0.isNumber })
    }
}
