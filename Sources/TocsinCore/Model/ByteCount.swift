import Foundation

/// A size in bytes as an operator writes it: `1048576`, `512KB`, `64MiB`, `10GB`, `1.5GiB`.
/// KB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024 (`K`, `M`, `G`, `T` alone
/// mean the binary ones, as in most server configs); the unit is case-insensitive and may be
/// separated from the number by a space.
public enum ByteCount {
    public static func parse(_ text: String) throws(TocsinError) -> Int64 {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let unitStart = trimmed.firstIndex { !($0.isNumber || $0 == ".") } ?? trimmed.endIndex
        let number = String(trimmed[..<unitStart])
        let unit = trimmed[unitStart...].trimmingCharacters(in: .whitespaces).lowercased()
        let multipliers: [String: Double] = [
            "": 1, "b": 1,
            "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
            "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024, "t": 1024 * 1024 * 1024 * 1024,
            "kib": 1024, "mib": 1024 * 1024, "gib": 1024 * 1024 * 1024, "tib": 1024 * 1024 * 1024 * 1024,
        ]
        guard let value = Double(number), value.isFinite, let multiplier = multipliers[unit] else {
            throw TocsinError(.badRequest, "'\(text)' is not a size: write bytes, or a number with KB, MB, GB, KiB, MiB or GiB")
        }
        let bytes = (value * multiplier).rounded(.down)
        guard bytes >= 1 else { throw TocsinError(.badRequest, "'\(text)' is out of range: a size must be at least 1 byte") }
        guard bytes < 9.2e18 else { throw TocsinError(.badRequest, "'\(text)' is out of range: a size must be under 8 EiB") }
        return Int64(bytes)
    }
}

