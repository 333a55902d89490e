struct ThresholdEntry: Sendable {
    var bound: Double
    var id: Int32

    /// Total order by (bound, id); bounds are never NaN.
    @inline(__always)
    static func precedes(_ a: ThresholdEntry, _ b: ThresholdEntry) -> Bool {
        a.bound < b.bound || (a.bound == b.bound && a.id < b.id)
    }
}

/// Sorted index for `.threshold(field, comparison, bound)`: `record[field].numeric <cmp> bound`.
///
/// Entries are kept sorted by (bound, id) in chunks of at most `maxChunk`, so an insert or a
/// remove costs O(log n + maxChunk + n / maxChunk) and a lookup is two binary searches plus a
/// contiguous run (a prefix for `>`/`>=`, a suffix for `<`/`<=`). Interests whose bound is not a
/// number (missing, NaN) never match and are not stored. A record field that is null,
/// non-numeric or NaN matches nothing.
struct ThresholdIndex: Sendable {
    let field: Int
    let comparison: Comparison
    let bound: Operand

    static let maxChunk = 512

    private var chunks: [[ThresholdEntry]] = []
    /// The first entry of each chunk (chunks are never empty).
    private var heads: [ThresholdEntry] = []
    private(set) var count = 0

    init(field: Int, comparison: Comparison, bound: Operand) {
        self.field = field
        self.comparison = comparison
        self.bound = bound
    }

    private func boundValue(of params: [Value]) -> Double? {
        if case .param(let i) = bound, i < 0 || i >= params.count { return nil }
        guard let b = bound.value(in: params), !b.isNaN else { return nil }
        return b
    }

    /// The chunk that holds (or would hold) `entry`: the last one whose head does not follow it.
    private func chunkIndex(for entry: ThresholdEntry) -> Int {
        var lo = 0
        var hi = heads.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ThresholdEntry.precedes(entry, heads[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return max(lo - 1, 0)
    }

    private static func insertionPoint(of entry: ThresholdEntry, in chunk: [ThresholdEntry]) -> Int {
        var lo = 0
        var hi = chunk.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ThresholdEntry.precedes(chunk[mid], entry) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    mutating func insert(_ id: Int32, params: [Value]) {
        guard let b = boundValue(of: params) else { return }
        let entry = ThresholdEntry(bound: b, id: id)
        count += 1
        if chunks.isEmpty {
            chunks.append([entry])
            heads.append(entry)
            return
        }
        let c = chunkIndex(for: entry)
        let at = Self.insertionPoint(of: entry, in: chunks[c])
        chunks[c].insert(entry, at: at)
        heads[c] = chunks[c][0]
        if chunks[c].count > Self.maxChunk {
            let half = chunks[c].count / 2
            let upper = Array(chunks[c][half...])
            chunks[c].removeSubrange(half...)
            chunks.insert(upper, at: c + 1)
            heads.insert(upper[0], at: c + 1)
        }
    }

    mutating func remove(_ id: Int32, params: [Value]) {
        guard let b = boundValue(of: params), !chunks.isEmpty else { return }
        let entry = ThresholdEntry(bound: b, id: id)
        let c = chunkIndex(for: entry)
        let at = Self.insertionPoint(of: entry, in: chunks[c])
        guard at < chunks[c].count, chunks[c][at].id == id, chunks[c][at].bound == b else {
            assertionFailure("threshold entry of \(id) not found")
            return
        }
        count -= 1
        chunks[c].remove(at: at)
        if chunks[c].isEmpty {
            chunks.remove(at: c)
            heads.remove(at: c)
        } else {
            heads[c] = chunks[c][0]
        }
    }

    /// Calls `body` with each run of candidates whose threshold conjunct holds for the record.
    @inline(__always)
    func forEachCandidateRun(for record: Record, _ body: (ArraySlice<ThresholdEntry>) -> Void) {
        guard field >= 0, field < record.count, let x = record[field].numeric, !x.isNaN, !chunks.isEmpty else {
            return
        }
        // The entries before the split are those with `bound < x` (strict) or `bound <= x`.
        let strict: Bool
        let prefix: Bool
        switch comparison {
        case .greaterOrEqual: (strict, prefix) = (false, true)  // x >= b  <=>  b <= x
        case .greaterThan: (strict, prefix) = (true, true)  // x > b   <=>  b < x
        case .lessOrEqual: (strict, prefix) = (true, false)  // x <= b  <=>  !(b < x)
        case .lessThan: (strict, prefix) = (false, false)  // x < b   <=>  !(b <= x)
        }
        @inline(__always) func before(_ b: Double) -> Bool { strict ? b < x : b <= x }
        // First chunk whose head is not before the split.
        var lo = 0
        var hi = heads.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if before(heads[mid].bound) { lo = mid + 1 } else { hi = mid }
        }
        let splitChunk = lo - 1  // the chunk that holds the split; -1: split is at the very start
        var splitPos = 0
        if splitChunk >= 0 {
            let chunk = chunks[splitChunk]
            var l = 0
            var h = chunk.count
            while l < h {
                let mid = (l + h) / 2
                if before(chunk[mid].bound) { l = mid + 1 } else { h = mid }
            }
            splitPos = l
        }
        if prefix {
            if splitChunk < 0 { return }
            for c in 0..<splitChunk { body(chunks[c][...]) }
            if splitPos > 0 { body(chunks[splitChunk][..<splitPos]) }
        } else {
            if splitChunk >= 0, splitPos < chunks[splitChunk].count { body(chunks[splitChunk][splitPos...]) }
            for c in (splitChunk + 1)..<chunks.count { body(chunks[c][...]) }
        }
    }
}
