import Testing

@testable import TocsinCore

@Suite struct EqualityIndexTests {
    @Test func matchesEqualKeyAndChecksResidual() {
        var index = ChannelIndex(channel: Fixtures.regionAlerts())
        let north2 = index.acquire(params: [.string("north"), .int(2)])
        let north4 = index.acquire(params: [.string("north"), .int(4)])
        _ = index.acquire(params: [.string("south"), .int(0)])

        var result: [InterestID] = []
        index.match([.string("north"), .int(3)], nowMillis: 0, into: &result)
        #expect(result == [north2])
        result = []
        index.match([.string("north"), .int(4)], nowMillis: 0, into: &result)
        #expect(Set(result) == [north2, north4])
        result = []
        index.match([.string("east"), .int(9)], nowMillis: 0, into: &result)
        #expect(result.isEmpty)
    }

    @Test func nullFieldMatchesNothing() {
        var index = ChannelIndex(channel: Fixtures.regionAlerts())
        _ = index.acquire(params: [.string(""), .int(0)])
        _ = index.acquire(params: [.null, .int(0)])  // a null parameter never matches either
        var result: [InterestID] = []
        index.match([.null, .int(9)], nowMillis: 0, into: &result)
        #expect(result.isEmpty)
    }

    @Test func releaseRemovesFromBucketAndKeepsTheOthers() {
        var index = ChannelIndex(channel: Fixtures.regionAlerts())
        let ids = (0..<10).map { index.acquire(params: [.string("k"), .int(Int64($0))]) }
        for id in ids where id.rawValue % 3 == 0 { index.release(id) }
        var result: [InterestID] = []
        index.match([.string("k"), .int(100)], nowMillis: 0, into: &result)
        #expect(Set(result) == Set(ids.filter { $0.rawValue % 3 != 0 }))
        for id in ids where id.rawValue % 3 != 0 { index.release(id) }
        result = []
        index.match([.string("k"), .int(100)], nowMillis: 0, into: &result)
        #expect(result.isEmpty)
        // The emptied bucket is recycled for another key.
        let other = index.acquire(params: [.string("other"), .int(0)])
        index.match([.string("other"), .int(0)], nowMillis: 0, into: &result)
        #expect(result == [other])
    }

    @Test func intAndBoolKeysHashByValue() {
        for (value, other) in [(Value.int(7), Value.int(8)), (.bool(true), .bool(false))] {
            let channel = Fixtures.channel(
                name: "eq", fields: [FieldSpec(name: "f", type: value.type!)],
                params: [ChannelParameter(name: "p", type: value.type!)], plan: .equality(field: 0, param: 0),
                residual: .always, predicate: Predicate { r, p, _ in r[0] == p[0] })
            var index = ChannelIndex(channel: channel)
            let id = index.acquire(params: [value])
            _ = index.acquire(params: [other])
            var result: [InterestID] = []
            index.match([value], nowMillis: 0, into: &result)
            #expect(result == [id])
        }
    }
}

@Suite struct MembershipIndexTests {
    @Test func indexedOnceUnderEachDistinctString() {
        var index = ChannelIndex(channel: Fixtures.taggedAlerts())
        let fireFlood = index.acquire(params: [.stringList(["fire", "flood", "fire"]), .int(0)])
        let flood = index.acquire(params: [.stringList(["flood"]), .int(3)])
        let none = index.acquire(params: [.stringList([]), .int(0)])

        var result: [InterestID] = []
        index.match([.string("fire"), .int(1)], nowMillis: 0, into: &result)
        #expect(result == [fireFlood])  // once, although "fire" is listed twice
        result = []
        index.match([.string("flood"), .int(3)], nowMillis: 0, into: &result)
        #expect(Set(result) == [fireFlood, flood])
        result = []
        index.match([.null, .int(3)], nowMillis: 0, into: &result)
        #expect(result.isEmpty)

        index.release(fireFlood)
        result = []
        index.match([.string("flood"), .int(3)], nowMillis: 0, into: &result)
        #expect(result == [flood])
        #expect(index.params(of: none) == [.stringList([]), .int(0)])
    }

    @Test func caseAndWhitespaceMatter() {
        var index = ChannelIndex(channel: Fixtures.taggedAlerts())
        _ = index.acquire(params: [.stringList(["Fire", " fire"]), .int(0)])
        var result: [InterestID] = []
        index.match([.string("fire"), .int(1)], nowMillis: 0, into: &result)
        #expect(result.isEmpty)
    }
}

@Suite struct ScanIndexTests {
    @Test func everyLiveInterestIsACandidate() {
        var index = ChannelIndex(channel: Fixtures.scanChannel())
        let two = index.acquire(params: [.int(2)])
        let three = index.acquire(params: [.int(3)])
        let five = index.acquire(params: [.int(5)])
        _ = index.acquire(params: [.int(0)])
        index.release(five)
        var result: [InterestID] = []
        index.match([.int(6)], nowMillis: 0, into: &result)
        #expect(Set(result) == [two, three])
        result = []
        index.match([.int(6)], nowMillis: 1, into: &result)  // nowMillis reaches the predicate
        #expect(result.isEmpty)
    }
}
