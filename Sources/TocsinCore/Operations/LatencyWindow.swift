/// Latencies in milliseconds, in fixed buckets, between two reads: a broker records the time
/// from an event's commit to its notifications being decided, and reports the percentiles of
/// each heartbeat interval (`BrokerLoad.latencyP50Millis`, `latencyP99Millis`). Constant memory;
/// a percentile is the upper bound of the bucket it falls in (the last bucket: the largest seen).
public struct LatencyWindow: Sendable, Hashable {
    /// Upper bounds of the buckets, in ms.
    public static let bounds: [Double] = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10_000]
    private var counts = [Int](repeating: 0, count: LatencyWindow.bounds.count + 1)
    public private(set) var count = 0
    private var largest = 0.0

    public init() {}

    public mutating func record(_ millis: Double, times n: Int = 1) {
        guard millis.isFinite, n > 0 else { return }
        let m = max(0, millis)
        let i = Self.bounds.firstIndex { m <= $0 } ?? Self.bounds.count
        counts[i] += n
        count += n
        largest = max(largest, m)
    }

    /// Adds another window's latencies.
    public mutating func merge(_ other: LatencyWindow) {
        for i in counts.indices { counts[i] += other.counts[i] }
        count += other.count
        largest = max(largest, other.largest)
    }

    /// The `p`-th percentile (0...1), nil when nothing was recorded.
    public func percentile(_ p: Double) -> Double? {
        guard count > 0 else { return nil }
        let rank = max(1, Int((p * Double(count)).rounded(.up)))
        var seen = 0
        for (i, c) in counts.enumerated() {
            seen += c
            if seen >= rank { return i < Self.bounds.count ? min(Self.bounds[i], largest) : largest }
        }
        return largest
    }
}
