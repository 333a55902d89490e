/// Checks the residual predicate on candidates in blocks.
///
/// Candidates arrive in index order, and their params arrays sit at random places in the heap:
/// at 10^5–10^6 interests nearly every one is a cache miss (the slot in the outer array, then
/// the array itself). So a block of candidates is appended to `result` first, their params are
/// touched in one pass of independent loads (the CPU overlaps those misses), and only then is
/// the residual called on each and the block compacted in place.
struct ResidualFilter {
    static let blockSize = 32

    let residual: @Sendable (_ record: Record, _ params: [Value], _ nowMillis: Int64) -> Bool
    let params: [[Value]]
    let record: Record
    let nowMillis: Int64
    private var blockStart: Int

    init(
        residual: @escaping @Sendable (_ record: Record, _ params: [Value], _ nowMillis: Int64) -> Bool,
        params: [[Value]], record: Record, nowMillis: Int64, start: Int
    ) {
        self.residual = residual
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
        let end = result.count
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
        result.removeSubrange(kept..<end)
        blockStart = kept
    }
}

/// Keeps a value alive as far as the optimizer can tell, so the loads that produced it stay.
@inline(never)
func keep(_ value: Int) {
    if value == 0x7fff_ffff_ffff_fff1 { print("", terminator: "") }
}
