/// Open-addressing hash map from `GeoIndex` cell keys to bucket numbers (linear probing,
/// multiplicative hashing, backward-shift deletion, at most half full).
///
/// A lookup reads one 16-byte slot, usually one cache line, where `Dictionary` reads its
/// occupancy bitmap, its keys and its values from three separate arrays: at 10^6 interests the
/// map does not fit in cache, and those misses were a good part of each probe of a level.
struct CellTable: Sendable {
    private struct Slot {
        var key: UInt64
        var value: Int32
    }

    /// No cell key has all bits set (`GeoIndex` keys the large list separately).
    static let emptyKey = UInt64.max

    private var slots = [Slot](repeating: Slot(key: emptyKey, value: -1), count: 16)
    private var shift = 60  // 64 - log2(slots.count)
    private(set) var count = 0

    @inline(__always)
    private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> UInt64(shift))
    }

    @inline(__always)
    func find(_ key: UInt64) -> Int32? {
        slots.withUnsafeBufferPointer { slots in
            let mask = slots.count - 1
            var i = home(key)
            while true {
                let slot = slots[i]
                if slot.key == key { return slot.value }
                if slot.key == Self.emptyKey { return nil }
                i = (i + 1) & mask
            }
        }
    }

    /// Adds a key that is not in the table.
    mutating func insert(_ key: UInt64, _ value: Int32) {
        precondition(key != Self.emptyKey)
        if (count + 1) * 2 > slots.count { grow() }
        place(key, value)
        count += 1
    }

    private mutating func place(_ key: UInt64, _ value: Int32) {
        let mask = slots.count - 1
        var i = home(key)
        while slots[i].key != Self.emptyKey { i = (i + 1) & mask }
        slots[i] = Slot(key: key, value: value)
    }

    private mutating func grow() {
        let old = slots
        slots = [Slot](repeating: Slot(key: Self.emptyKey, value: -1), count: old.count * 2)
        shift -= 1
        for slot in old where slot.key != Self.emptyKey { place(slot.key, slot.value) }
    }

    /// Removes a key if present.
    mutating func remove(_ key: UInt64) {
        let mask = slots.count - 1
        var i = home(key)
        while slots[i].key != key {
            if slots[i].key == Self.emptyKey { return }
            i = (i + 1) & mask
        }
        count -= 1
        // Backward shift: move later members of the probe run into the hole when their home
        // position does not lie (cyclically) between the hole and where they are.
        var j = i
        while true {
            j = (j + 1) & mask
            let key = slots[j].key
            if key == Self.emptyKey { break }
            let k = home(key)
            let stays = i <= j ? (i < k && k <= j) : (i < k || k <= j)
            if stays { continue }
            slots[i] = slots[j]
            i = j
        }
        slots[i] = Slot(key: Self.emptyKey, value: -1)
    }
}
