/// The distinct parameter bindings of one channel with their reference counts
/// (BAD's subscription aggregation): identical params share one dense, reusable id.
struct InterestTable: Sendable {
    /// Params by id; empty for a free id.
    private(set) var params: [[Value]] = []
    /// Reference counts by id; 0 for a free id.
    private var refcounts: [Int] = []
    private var idByParams: [[Value]: Int32] = [:]
    private var freeIDs: [Int32] = []
    private(set) var count = 0

    /// Number of id slots ever handed out (live or free).
    var capacity: Int { params.count }

    func isLive(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < refcounts.count && refcounts[Int(id)] > 0
    }

    /// Returns the interest's id and whether it was created by this call.
    mutating func acquire(_ p: [Value]) -> (id: Int32, isNew: Bool) {
        // Params holding a NaN are not equal to themselves: they can never be found again in a
        // hash map, so each acquire gets its own interest (which the caller releases by id).
        let aggregatable = p == p
        if aggregatable, let id = idByParams[p] {
            refcounts[Int(id)] += 1
            return (id, false)
        }
        let id: Int32
        if let reused = freeIDs.popLast() {
            id = reused
            params[Int(id)] = p
            refcounts[Int(id)] = 1
        } else {
            precondition(params.count < Int(Int32.max), "too many interests in one channel")
            id = Int32(params.count)
            params.append(p)
            refcounts.append(1)
        }
        if aggregatable { idByParams[p] = id }
        count += 1
        return (id, true)
    }

    /// Drops one reference. Returns the params when the interest was removed, nil otherwise
    /// (still referenced, or not a live id).
    mutating func release(_ id: Int32) -> [Value]? {
        guard isLive(id) else { return nil }
        let i = Int(id)
        refcounts[i] -= 1
        guard refcounts[i] == 0 else { return nil }
        let p = params[i]
        if p == p { idByParams.removeValue(forKey: p) }
        params[i] = []
        freeIDs.append(id)
        count -= 1
        return p
    }
}
