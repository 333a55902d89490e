import Testing

@testable import TocsinCore

@Suite struct ThresholdIndexTests {
    func ids(_ index: ChannelIndex, _ x: Value, kind: String = "k") -> Set<InterestID> {
        var result: [InterestID] = []
        index.match([x, .string(kind)], nowMillis: 0, into: &result)
        return Set(result)
    }

    @Test(arguments: [Comparison.lessThan, .lessOrEqual, .greaterThan, .greaterOrEqual])
    func boundaryIsExact(_ comparison: Comparison) {
        var index = ChannelIndex(channel: Fixtures.thresholdChannel(comparison))
        let one = index.acquire(params: [.double(1)])
        let two = index.acquire(params: [.double(2)])
        let three = index.acquire(params: [.double(3)])
        let got = ids(index, .double(2))
        switch comparison {
        case .lessThan: #expect(got == [three])  // 2 < b
        case .lessOrEqual: #expect(got == [two, three])  // 2 <= b
        case .greaterThan: #expect(got == [one])  // 2 > b
        case .greaterOrEqual: #expect(got == [one, two])  // 2 >= b
        }
        #expect(ids(index, .int(2)) == got)  // ints compare numerically
        #expect(ids(index, .double(2), kind: "ignored").isEmpty)  // residual still applies
    }

    @Test func nullNaNAndInfinities() {
        var index = ChannelIndex(channel: Fixtures.thresholdChannel(.greaterOrEqual))
        let minusInf = index.acquire(params: [.double(-.infinity)])
        let plusInf = index.acquire(params: [.double(.infinity)])
        _ = index.acquire(params: [.double(.nan)])
        _ = index.acquire(params: [.null])
        #expect(ids(index, .null).isEmpty)
        #expect(ids(index, .double(.nan)).isEmpty)
        #expect(ids(index, .string("7")).isEmpty)
        #expect(ids(index, .double(0)) == [minusInf])
        #expect(ids(index, .double(.infinity)) == [minusInf, plusInf])
        #expect(index.count == 4)
    }

    @Test func constantBound() {
        var index = ChannelIndex(channel: Fixtures.thresholdChannel(.greaterThan, bound: .constant(5)))
        let a = index.acquire(params: [.double(0)])
        let b = index.acquire(params: [.double(1)])
        #expect(ids(index, .double(5)).isEmpty)
        #expect(ids(index, .double(5.5)) == [a, b])
    }

    /// Thousands of interests with heavily duplicated bounds: chunk splits, removals inside runs of
    /// equal bounds, and emptied chunks, against brute force.
    @Test(arguments: [Comparison.lessThan, .lessOrEqual, .greaterThan, .greaterOrEqual])
    func manyInterestsAgainstBruteForce(_ comparison: Comparison) {
        var rng = SplitMix(seed: 7)
        let pool: [[Value]] = (0..<3000).map { i in
            i % 2 == 0 ? [.double(Double(Int.random(in: 0...20, using: &rng)))] : [.double(Double.random(in: -5...25, using: &rng))]
        }
        var ops: [Op] = (0..<4000).map { _ in .acquire(Int.random(in: 0..<100_000, using: &rng)) }
        ops += (0..<2500).map { _ in
            Bool.random(using: &rng)
                ? .release(Int.random(in: 0..<100_000, using: &rng)) : .acquire(Int.random(in: 0..<100_000, using: &rng))
        }
        ops += (0..<2500).map { _ in .release(Int.random(in: 0..<100_000, using: &rng)) }
        var events: [Record] = (-2...22).map { [.double(Double($0)), .string("k")] }
        events += (0..<20).map { _ in [.double(Double.random(in: -6...26, using: &rng)), .string("k")] }
        _ = BruteForceHarness.run(channel: Fixtures.thresholdChannel(comparison), pool: pool, ops: ops, events: events, checkEvery: 1500)
    }
}
