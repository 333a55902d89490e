/// An entry of a `Buckets` list: anything that names the interest it belongs to.
protocol BucketEntry: Sendable {
    var id: Int32 { get }
}

/// Where one copy of an interest's entry lives: a bucket and the position in it.
struct BucketSlot: Sendable, Hashable {
    var bucket: Int32
    var pos: Int32
}

/// A pool of unordered entry lists with O(1) append and swap-remove; emptied lists are
/// recycled. The owner keeps each interest's `BucketSlot`s and fixes the one of the entry
/// that `remove` moved.
struct Buckets<Entry: BucketEntry>: Sendable {
    private(set) var lists: [[Entry]] = []
    private var freeLists: [Int32] = []

    mutating func makeBucket() -> Int32 {
        if let b = freeLists.popLast() { return b }
        lists.append([])
        return Int32(lists.count - 1)
    }

    /// Returns the entry's position in the bucket.
    mutating func append(_ entry: Entry, to bucket: Int32) -> Int32 {
        lists[Int(bucket)].append(entry)
        return Int32(lists[Int(bucket)].count - 1)
    }

    /// Swap-removes the entry at `pos`. Returns the id of the entry that moved into `pos`
    /// (the former last one), or nil when the removed entry was the last.
    mutating func remove(at pos: Int32, from bucket: Int32) -> Int32? {
        let b = Int(bucket)
        let p = Int(pos)
        let last = lists[b].count - 1
        if p == last {
            lists[b].removeLast()
            return nil
        }
        lists[b].swapAt(p, last)
        lists[b].removeLast()
        return lists[b][p].id
    }

    func isEmpty(_ bucket: Int32) -> Bool { lists[Int(bucket)].isEmpty }

    /// Recycles an empty bucket, releasing its storage when it had grown large.
    mutating func freeBucket(_ bucket: Int32) {
        if lists[Int(bucket)].capacity > 64 { lists[Int(bucket)] = [] }
        freeLists.append(bucket)
    }
}
