import Testing

@testable import TocsinCore

@Suite struct HashRingTests {
    @Test func pointsAreSortedAndOwnedByEveryMember() {
        let ring = HashRing(members: [("a", 0), ("b", 1), ("c", 2)], virtualNodes: 64)
        #expect(ring.count == 192)
        #expect(zip(ring.points, ring.points.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(Set(ring.owners) == [0, 1, 2])
        #expect(ring.points.contains(StableHash.hash("b#17")))
    }

    @Test func lookupFindsTheFirstPointAtOrAfterAndWraps() {
        let ring = HashRing(members: [("a", 0), ("b", 1)], virtualNodes: 8)
        for (position, point) in ring.points.enumerated() {
            #expect(ring.firstPosition(atOrAfter: point) == position)
            if point > 0, position > 0, ring.points[position - 1] < point - 1 {
                #expect(ring.firstPosition(atOrAfter: point - 1) == position)
            }
        }
        #expect(ring.firstPosition(atOrAfter: 0) == 0)
        if let last = ring.points.last, last < .max {
            #expect(ring.firstPosition(atOrAfter: last + 1) == 0)  // past the end wraps to the start
        }
    }

    @Test func membersOwnRoughlyEqualShares() {
        let members = (0..<8).map { (id: "broker-\($0)", index: $0) }
        let ring = HashRing(members: members, virtualNodes: 64)
        var counts = Array(repeating: 0, count: 8)
        for i in 0..<40_000 {
            counts[ring.owners[ring.firstPosition(atOrAfter: StableHash.hash("key-\(i)"))]] += 1
        }
        // Fair share is 5000; 64 points per member keep every share well within ±40%.
        #expect(counts.allSatisfy { (3000...7000).contains($0) }, "\(counts)")
    }
}
