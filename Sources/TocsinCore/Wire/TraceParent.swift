/// A W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/): version, trace
/// id, parent span id and flags, as `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
/// A publisher may send one (the HTTP header, or the `traceparent` field of a `publish` frame)
/// so the broker's spans join its trace; the broker stores the publish span's with the events.
public enum TraceParent {
    /// The only length this version knows (a later version may be longer; its first 55
    /// characters read as version 00).
    static let length = 55

    /// `text` if it is a well-formed traceparent: lowercase hex fields of 2, 32, 16 and 2
    /// digits joined by `-`, a version other than `ff`, and ids that are not all zeros.
    public static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == length || (bytes.count > length && bytes[length] == UInt8(ascii: "-") && bytes[0...1] != [0x30, 0x30]) else {
            return false
        }
        func hex(_ range: Range<Int>) -> Bool {
            bytes[range].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        }
        func zeros(_ range: Range<Int>) -> Bool { bytes[range].allSatisfy { $0 == 0x30 } }
        let dashes = [2, 35, 52].allSatisfy { bytes[$0] == UInt8(ascii: "-") }
        return dashes && hex(0..<2) && hex(3..<35) && hex(36..<52) && hex(53..<55)
            && bytes[0...1] != [0x66, 0x66] && !zeros(3..<35) && !zeros(36..<52)
    }

    /// `text` if valid, else `bad_request` naming `field`.
    public static func validated(_ text: String, field: String = "traceparent") throws(TocsinError) -> String {
        guard isValid(text) else {
            throw TocsinError(
                .badRequest, "'\(field)' must be a W3C traceparent: 00-<32 lowercase hex>-<16 lowercase hex>-<2 hex>, ids not all zero")
        }
        return text
    }

    /// Whether the flags say the trace is sampled (its spans are recorded).
    public static func isSampled(_ text: String) -> Bool {
        guard isValid(text) else { return false }
        let flags = Array(text.utf8)[54]
        // The low bit of the flags' second hex digit.
        let value = flags <= 0x39 ? flags - 0x30 : flags - 0x61 + 10
        return value & 1 == 1
    }
}
