/// A 64-bit hash that is the same in every process, on every machine, in every release.
///
/// Placement depends on it: if it changed, every client would map to a different broker and the
/// whole cluster would reshuffle. Swift's `Hasher` is randomly seeded per process, so it must never be
/// used here. This is FNV-1a (64-bit) over the UTF-8 bytes, followed by MurmurHash3's `fmix64`
/// finalizer, which spreads FNV's weak low bits (ids like "client-1", "client-2" differ in one byte)
/// over the whole word. Tests pin literal values; do not change either step.
///
/// Public because other modules need the same stable hash (the client library uses it to pick a
/// fallback broker deterministically).
public enum StableHash {
    public static func hash(_ string: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a 64-bit offset basis
        for byte in string.utf8 {
            h ^= UInt64(byte)
            h &*= 0x0000_0100_0000_01b3  // FNV-1a 64-bit prime
        }
        return fmix64(h)
    }

    /// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
    public static func fmix64(_ value: UInt64) -> UInt64 {
        var k = value
        k ^= k >> 33
        k &*= 0xff51_afd7_ed55_8ccd
        k ^= k >> 33
        k &*= 0xc4ce_b9fe_1a85_ec53
        k ^= k >> 33
        return k
    }
}

/// A consistent-hashing ring: each member owns `virtualNodes` points, `StableHash.hash("\(id)#\(i)")`
/// for i in 0..<virtualNodes, and a key belongs to the first point at or clockwise after its hash.
///
/// Many points per member even out the arc each one owns (with 64 points the share of a member is
/// within roughly ±12% of fair), and adding or removing a member only moves the keys on the arcs it
/// gains or loses — about 1/n of them. Points are kept in one sorted array so a lookup is a binary search.
struct HashRing: Sendable {
    /// Point hashes, ascending.
    private(set) var points: [UInt64]
    /// `owners[i]` is the member (an index the caller chose) owning `points[i]`.
    private(set) var owners: [Int]

    /// `members` pairs each member's id (hashed) with the index the ring reports for it.
    init(members: [(id: String, index: Int)], virtualNodes: Int) {
        var all: [(point: UInt64, owner: Int, id: String)] = []
        all.reserveCapacity(members.count * max(virtualNodes, 1))
        for member in members {
            for i in 0..<max(virtualNodes, 1) {
                all.append((StableHash.hash("\(member.id)#\(i)"), member.index, member.id))
            }
        }
        // Ties (two equal 64-bit points) are broken by id so the order never depends on input order.
        all.sort { $0.point != $1.point ? $0.point < $1.point : $0.id < $1.id }
        points = all.map(\.point)
        owners = all.map(\.owner)
    }

    var isEmpty: Bool { points.isEmpty }
    var count: Int { points.count }

    /// Position of the first point at or after `hash`, wrapping to 0 past the last point.
    /// Only meaningful when the ring is not empty.
    func firstPosition(atOrAfter hash: UInt64) -> Int {
        var low = 0
        var high = points.count
        while low < high {
            let mid = (low + high) / 2
            if points[mid] < hash { low = mid + 1 } else { high = mid }
        }
        return low == points.count ? 0 : low
    }
}
