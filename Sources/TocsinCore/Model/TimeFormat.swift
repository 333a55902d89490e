/// RFC 3339 times <-> milliseconds since the Unix epoch, exact: integer arithmetic on the
/// proleptic Gregorian calendar, no `Date` or floating point in between.
///
/// The supported range is 0001-01-01T00:00:00.000Z ... 9999-12-31T23:59:59.999Z, for strings and
/// for integer milliseconds alike (`supportedRange`). Accepted: `YYYY-MM-DDTHH:MM:SS`, then an
/// optional fraction of 1-9 digits (kept to the millisecond: digits after the third are
/// dropped, never rounded), then `Z` or an offset `+hh:mm`/`-hh:mm` (`T` and `Z` may be lower
/// case). Impossible calendar values (February 30, hour 24, minute 60) and leap seconds
/// (second 60: Unix time has none) are refused, never rolled over.
public enum TimeFormat {
    /// 0001-01-01T00:00:00.000Z.
    public static let minMillis: Int64 = -62_135_596_800_000
    /// 9999-12-31T23:59:59.999Z.
    public static let maxMillis: Int64 = 253_402_300_799_999
    public static let supportedRange: ClosedRange<Int64> = minMillis...maxMillis

    /// The range, for error messages.
    public static let rangeDescription =
        "between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z (milliseconds \(minMillis) to \(maxMillis))"

    /// Why a text is not a supported time.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// Not of the RFC 3339 shape.
        case malformed
        /// The shape is right, but a field is impossible (names it).
        case impossible(String)
        /// A real time outside `supportedRange`.
        case outOfRange

        public var description: String {
            switch self {
            case .malformed: "not an RFC 3339 time like 2026-11-23T12:00:00Z or 2026-11-23T13:00:00.250+01:00"
            case .impossible(let what): "not a real time: \(what)"
            case .outOfRange: "outside the supported range: times must be \(TimeFormat.rangeDescription)"
            }
        }
    }

    /// The milliseconds of an RFC 3339 time, or nil (see `check` for why).
    public static func parse(_ text: String) -> Int64? {
        try? check(text).get()
    }

    /// The milliseconds of an RFC 3339 time, or why it is not a supported one.
    public static func check(_ text: String) -> Result<Int64, Problem> {
        var text = text
        return text.withUTF8 { parse(bytes: $0) }
    }

    private static func parse(bytes b: UnsafeBufferPointer<UInt8>) -> Result<Int64, Problem> {
        // YYYY-MM-DDTHH:MM:SS is 19 bytes; the zone at least 1.
        guard b.count >= 20 else { return .failure(.malformed) }
        func digits(_ at: Int, _ count: Int) -> Int64? {
            var n: Int64 = 0
            for i in at..<at + count {
                let d = b[i] &- UInt8(ascii: "0")
                guard d <= 9 else { return nil }
                n = n * 10 + Int64(d)
            }
            return n
        }
        guard let year = digits(0, 4), b[4] == UInt8(ascii: "-"), let month = digits(5, 2), b[7] == UInt8(ascii: "-"),
            let day = digits(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"),
            let hour = digits(11, 2), b[13] == UInt8(ascii: ":"), let minute = digits(14, 2), b[16] == UInt8(ascii: ":"),
            let second = digits(17, 2)
        else { return .failure(.malformed) }
        var i = 19
        var millis: Int64 = 0
        if b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < b.count, b[i] &- UInt8(ascii: "0") <= 9 {
                if i - start < 3 { millis = millis * 10 + Int64(b[i] - UInt8(ascii: "0")) }
                i += 1
            }
            let count = i - start
            guard count >= 1, count <= 9 else { return .failure(.malformed) }
            for _ in count..<max(count, 3) { millis *= 10 }
        }
        guard i < b.count else { return .failure(.malformed) }
        var offsetMinutes: Int64 = 0
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            i += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard b.count - i == 6, let h = digits(i + 1, 2), b[i + 3] == UInt8(ascii: ":"), let m = digits(i + 4, 2) else {
                return .failure(.malformed)
            }
            guard h <= 23, m <= 59 else { return .failure(.impossible("offset \(h):\(m) (hours 00-23, minutes 00-59)")) }
            offsetMinutes = (h * 60 + m) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
            i += 6
        default:
            return .failure(.malformed)
        }
        guard i == b.count else { return .failure(.malformed) }
        guard (1...12).contains(month) else { return .failure(.impossible("month \(month) (01-12)")) }
        let monthDays = daysIn(month: month, year: year)
        guard (1...monthDays).contains(day) else {
            return .failure(.impossible("day \(day) of month \(month) (it has \(monthDays) days in \(year))"))
        }
        guard hour <= 23 else { return .failure(.impossible("hour \(hour) (00-23)")) }
        guard minute <= 59 else { return .failure(.impossible("minute \(minute) (00-59)")) }
        guard second <= 59 else {
            return .failure(.impossible("second \(second) (00-59; leap seconds are not accepted, Unix time has none)"))
        }
        // At most 10^4 years: no overflow anywhere below.
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = ((days * 24 + hour) * 60 + minute - offsetMinutes) * 60 + second
        let result = seconds * 1000 + millis
        guard supportedRange.contains(result) else { return .failure(.outOfRange) }
        return .success(result)
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, with `.mmm` before the `Z` when the milliseconds are not whole
    /// seconds; always UTC. Exact for every value of `supportedRange`; a value outside it (never
    /// accepted from a client) gets a signed year of as many digits as it needs, e.g. `+10000-…`.
    public static func format(_ ms: Int64) -> String {
        let (dayIndex, msOfDay) = floorDivision(ms, 86_400_000)
        let (year, month, day) = civilFromDays(dayIndex)
        var out = ""
        out.reserveCapacity(24)
        if (0...9999).contains(year) {
            pad(year, 4, into: &out)
        } else {
            out += year < 0 ? "-" : "+"
            pad(year.magnitude, 4, into: &out)
        }
        out += "-"
        pad(UInt64(month), 2, into: &out)
        out += "-"
        pad(UInt64(day), 2, into: &out)
        out += "T"
        pad(UInt64(msOfDay / 3_600_000), 2, into: &out)
        out += ":"
        pad(UInt64(msOfDay / 60_000 % 60), 2, into: &out)
        out += ":"
        pad(UInt64(msOfDay / 1000 % 60), 2, into: &out)
        if msOfDay % 1000 != 0 {
            out += "."
            pad(UInt64(msOfDay % 1000), 3, into: &out)
        }
        out += "Z"
        return out
    }

    // MARK: Calendar arithmetic (proleptic Gregorian; H. Hinnant's days-from-civil)

    static func isLeap(_ year: Int64) -> Bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a valid date (|year| well below 10^12).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// The date of a day since 1970-01-01; total for every day an `Int64` of milliseconds reaches.
    static func civilFromDays(_ days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func floorDivision(_ a: Int64, _ b: Int64) -> (quotient: Int64, remainder: Int64) {
        let (q, r) = a.quotientAndRemainder(dividingBy: b)
        return r < 0 ? (q - 1, r + b) : (q, r)
    }

    private static func pad<T: BinaryInteger>(_ value: T, _ width: Int, into out: inout String) {
        let text = String(value)
        if text.count < width { out += String(repeating: "0", count: width - text.count) }
        out += text
    }
}
