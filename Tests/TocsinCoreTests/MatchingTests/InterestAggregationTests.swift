import Testing

@testable import TocsinCore

@Suite struct InterestAggregationTests {
    @Test func identicalParamsShareOneRefcountedInterest() {
        var index = ChannelIndex(channel: Fixtures.regionAlerts())
        let a = index.acquire(params: [.string("north"), .int(2)])
        let b = index.acquire(params: [.string("north"), .int(2)])
        let c = index.acquire(params: [.string("north"), .int(3)])
        #expect(a == b)
        #expect(a != c)
        #expect(index.count == 2)
        #expect(index.params(of: a) == [.string("north"), .int(2)])

        #expect(index.release(a) == false)  // one reference left
        #expect(index.contains(a))
        #expect(index.count == 2)
        #expect(index.release(b) == true)
        #expect(!index.contains(a))
        #expect(index.count == 1)
    }

    @Test func releasedIdsAreReused() {
        var index = ChannelIndex(channel: Fixtures.regionAlerts())
        let ids = (0..<5).map { index.acquire(params: [.string("r\($0)"), .int(0)]) }
        #expect(Set(ids.map(\.rawValue)) == [0, 1, 2, 3, 4])  // dense
        #expect(index.release(ids[3]) == true)
        #expect(index.release(ids[1]) == true)
        let reused = index.acquire(params: [.string("new"), .int(1)])
        #expect(reused == ids[1])  // most recently freed first
        #expect(index.params(of: reused) == [.string("new"), .int(1)])
        #expect(index.acquire(params: [.string("newer"), .int(1)]) == ids[3])
        #expect(index.acquire(params: [.string("newest"), .int(1)]).rawValue == 5)

        // The reused id matches for its new params only.
        var result: [InterestID] = []
        index.match([.string("new"), .int(5)], nowMillis: 0, into: &result)
        #expect(result == [reused])
        result = []
        index.match([.string("r1"), .int(5)], nowMillis: 0, into: &result)
        #expect(result.isEmpty)
    }

    @Test func releasingAnIdThatIsNotLiveIsIgnored() {
        var index = ChannelIndex(channel: Fixtures.regionAlerts())
        let a = index.acquire(params: [.string("x"), .int(0)])
        #expect(index.release(a) == true)
        #expect(index.release(a) == false)
        #expect(index.release(InterestID(rawValue: 42)) == false)
        #expect(index.release(InterestID(rawValue: -1)) == false)
        #expect(index.count == 0)
    }

    @Test func paramsWithNaNNeverAggregate() {
        var index = ChannelIndex(channel: Fixtures.thresholdChannel(.greaterThan))
        let a = index.acquire(params: [.double(.nan)])
        let b = index.acquire(params: [.double(.nan)])
        #expect(a != b)
        #expect(index.count == 2)
        #expect(index.release(a) == true)
        #expect(index.release(b) == true)
        #expect(index.count == 0)
    }

    @Test func matchAppendsWithoutClearing() {
        var index = ChannelIndex(channel: Fixtures.regionAlerts())
        let a = index.acquire(params: [.string("x"), .int(0)])
        var result = [InterestID(rawValue: 99)]
        index.match([.string("x"), .int(1)], nowMillis: 0, into: &result)
        #expect(result == [InterestID(rawValue: 99), a])
    }

    @Test func copiesAreIndependentValues() {
        var original = ChannelIndex(channel: Fixtures.emergenciesNearMe())
        let a = original.acquire(params: Fixtures.geoParams(52.37, 4.90, 10))
        var copy = original
        let b = copy.acquire(params: Fixtures.geoParams(52.37, 4.91, 10))
        copy.release(a)

        var result: [InterestID] = []
        original.match(Fixtures.geoEvent(52.37, 4.90), nowMillis: 0, into: &result)
        #expect(result == [a])
        result = []
        copy.match(Fixtures.geoEvent(52.37, 4.90), nowMillis: 0, into: &result)
        #expect(result == [b])
        #expect(original.count == 1 && copy.count == 1)
    }
}
