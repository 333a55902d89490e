import Foundation

/// Latency samples in nanoseconds, sorted, with the percentiles the benchmarks print.
public struct LatencyDistribution: Sendable, Hashable, CustomStringConvertible {
    /// The samples, ascending.
    public let sorted: [Int64]

    public init(_ samples: [Int64]) { sorted = samples.sorted() }

    public var count: Int { sorted.count }

    /// The sample at quantile `q` (0...1): the one at index ⌊count × q⌋; nil without samples.
    public func at(_ q: Double) -> Int64? {
        sorted.isEmpty ? nil : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
    }

    /// "p50 0.412 ms, p90 …, p99 …, p99.9 …, max … (N samples)", or "no samples".
    public var description: String {
        guard let max = sorted.last else { return "no samples" }
        func ms(_ v: Int64) -> String { String(format: "%.3f ms", Double(v) / 1e6) }
        let points = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)].map { "\($0.0) \(ms(at($0.1)!))" }
        return points.joined(separator: ", ") + ", max \(ms(max)) (\(sorted.count) samples)"
    }
}
