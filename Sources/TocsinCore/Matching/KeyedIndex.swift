struct KeyedEntry: BucketEntry {
    var id: Int32
}

/// Hash index for `.equality(field, param)` and `.membership(field, param)`.
///
/// Decides its conjunct exactly:
/// - equality: `record[field] == params[param]`, false when either is `.null` (or not equal to
///   itself, like a NaN double);
/// - membership: the record field is `.string(s)` and `s` is in the `.stringList` param.
///   An interest is indexed once under each distinct string of its list.
struct KeyedIndex: Sendable {
    let field: Int
    let param: Int
    let isMembership: Bool

    private var bucketByKey: [Value: Int32] = [:]
    private var keyOfBucket: [Value] = []
    private var buckets = Buckets<KeyedEntry>()
    /// By interest id: where its entries are (one per distinct key).
    private var slots: [[BucketSlot]] = []

    init(field: Int, param: Int, isMembership: Bool) {
        self.field = field
        self.param = param
        self.isMembership = isMembership
    }

    /// The keys an interest is indexed under; none when the conjunct can never be true.
    private func keys(of params: [Value]) -> [Value] {
        guard param >= 0, param < params.count else { return [] }
        let value = params[param]
        if isMembership {
            guard case .stringList(let list) = value else { return [] }
            var seen = Set<String>()
            var keys: [Value] = []
            for s in list where seen.insert(s).inserted { keys.append(.string(s)) }
            return keys
        }
        if case .null = value { return [] }
        guard value == value else { return [] }
        return [value]
    }

    mutating func insert(_ id: Int32, params: [Value]) {
        let i = Int(id)
        if slots.count <= i { slots.append(contentsOf: repeatElement([], count: i + 1 - slots.count)) }
        var mine: [BucketSlot] = []
        for key in keys(of: params) {
            let bucket: Int32
            if let b = bucketByKey[key] {
                bucket = b
            } else {
                bucket = buckets.makeBucket()
                bucketByKey[key] = bucket
                if Int(bucket) == keyOfBucket.count { keyOfBucket.append(key) } else { keyOfBucket[Int(bucket)] = key }
            }
            let pos = buckets.append(KeyedEntry(id: id), to: bucket)
            mine.append(BucketSlot(bucket: bucket, pos: pos))
        }
        slots[i] = mine
    }

    mutating func remove(_ id: Int32) {
        let i = Int(id)
        guard i < slots.count else { return }
        let mine = slots[i]
        slots[i] = []
        for slot in mine {
            if let moved = buckets.remove(at: slot.pos, from: slot.bucket) {
                let m = Int(moved)
                for k in slots[m].indices where slots[m][k].bucket == slot.bucket {
                    slots[m][k].pos = slot.pos
                    break
                }
            }
            if buckets.isEmpty(slot.bucket) {
                bucketByKey.removeValue(forKey: keyOfBucket[Int(slot.bucket)])
                keyOfBucket[Int(slot.bucket)] = .null
                buckets.freeBucket(slot.bucket)
            }
        }
    }

    /// The candidates whose key conjunct holds for the record.
    @inline(__always)
    func withCandidates(for record: Record, _ body: ([KeyedEntry]) -> Void) {
        guard field >= 0, field < record.count else { return }
        let value = record[field]
        let bucket: Int32?
        if isMembership {
            guard case .string = value else { return }
            bucket = bucketByKey[value]
        } else {
            if case .null = value { return }
            bucket = bucketByKey[value]
        }
        guard let bucket else { return }
        body(buckets.lists[Int(bucket)])
    }
}
