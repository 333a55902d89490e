/// Checks candidates against what the index did not decide, in blocks: first the residual
/// threshold, if the channel has one (see `ResidualThreshold`), then the residual predicate,
/// unless the threshold was all of it.
///
/// Candidates arrive in index order, and what they are checked against sits at random places
/// in memory: at 10^5–10^6 interests nearly every one is a cache miss (the interest's slot in
/// the dense bound array; for the residual, its params array). So a block of candidates is
/// appended to `result` first, then one pass of independent loads touches what the block will
/// need (the CPU overlaps those misses), and only then is each checked and the block
/// compacted in place.
struct ResidualFilter {
    static let blockSize = 32

    /// The residual threshold as one event sees it.
    struct Threshold {
        let comparison: Comparison
        /// The event's value of the threshold's field.
        let value: Value
        /// Each interest's bound, by interest id.
        let bounds: UnsafeBufferPointer<Value>
        /// The threshold is the whole residual: the predicate need not run.
        let isWholeResidual: Bool
    }

    let residual: @Sendable (_ record: Record, _ params: [Value], _ nowMillis: Int64) -> Bool
    let threshold: Threshold?
    let params: [[Value]]
    let record: Record
    let nowMillis: Int64
    private var blockStart: Int

    init(
        residual: @escaping @Sendable (_ record: Record, _ params: [Value], _ nowMillis: Int64) -> Bool,
        threshold: Threshold?, params: [[Value]], record: Record, nowMillis: Int64, start: Int
    ) {
        self.residual = residual
        self.threshold = threshold
        self.params = params
        self.record = record
        self.nowMillis = nowMillis
        self.blockStart = start
    }

    @inline(__always)
    mutating func append(_ id: Int32, to result: inout [InterestID]) {
        result.append(InterestID(rawValue: id))
        if result.count - blockStart == Self.blockSize { flush(&result) }
    }

    mutating func finish(_ result: inout [InterestID]) {
        if result.count > blockStart { flush(&result) }
    }

    private mutating func flush(_ result: inout [InterestID]) {
        var end = result.count
        if let threshold {
            end = Self.keepPassing(threshold, in: &result, from: blockStart, to: end)
            if threshold.isWholeResidual {
                result.removeSubrange(end..<result.count)
                blockStart = end
                return
            }
        }
        // Two passes, so that each pass's loads are independent of each other: the arrays'
        // headers (the count), then their last bytes (whose address depends on the count).
        var touched = 0
        params.withUnsafeBufferPointer { params in
            for k in blockStart..<end {
                touched &+= params[Int(result[k].rawValue)].count
            }
            for k in blockStart..<end {
                params[Int(result[k].rawValue)].withUnsafeBytes { bytes in
                    if let last = bytes.last { touched &+= Int(last) }
                }
            }
        }
        keep(touched)
        var kept = blockStart
        for k in blockStart..<end {
            let id = result[k]
            if residual(record, params[Int(id.rawValue)], nowMillis) {
                result[kept] = id
                kept += 1
            }
        }
        result.removeSubrange(kept..<result.count)
        blockStart = kept
    }

    /// Compacts `result[start..<end]` to the candidates whose bound passes; returns the new end.
    private static func keepPassing(_ threshold: Threshold, in result: inout [InterestID], from start: Int, to end: Int) -> Int {
        let bounds = threshold.bounds
        guard let base = UnsafeRawPointer(bounds.baseAddress) else { return start }
        var touched = 0
        for k in start..<end {
            touched &+= Int(base.load(fromByteOffset: Int(result[k].rawValue) * MemoryLayout<Value>.stride, as: UInt8.self))
        }
        keep(touched)
        var kept = start
        for k in start..<end {
            let id = result[k]
            if threshold.comparison.holds(threshold.value, bounds[Int(id.rawValue)]) {
                result[kept] = id
                kept += 1
            }
        }
        return kept
    }
}

/// Keeps a value alive as far as the optimizer can tell, so the loads that produced it stay.
@inline(never)
func keep(_ value: Int) {
    if value == 0x7fff_ffff_ffff_fff1 { print("", terminator: "") }
}
