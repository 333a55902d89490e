import PropertyBased
import Testing

@testable import TocsinCore

/// The whole pipeline a broker runs, against brute force: random channels written in the
/// language (the language tests' `World` generator), compiled and planned, their interests held
/// in a `ChannelIndex` with random acquires and releases, must match exactly the interests whose
/// parameters make the where-clause true, for random events.
@Suite struct MatcherAgainstBruteForceTests {
    @Test func indexedMatchingEqualsBruteForceOnRandomChannels() async {
        var planned = 0
        var thresholds = 0
        var wholeThresholds = 0
        await propertyCheck(count: 200, input: Gen.int(in: 0...Int.max)) { seed in
            var world = World(seed: seed)
            for round in 0..<6 {
                let text = round.isMultiple(of: 2) ? world.whereClause() : world.indexedWithThreshold()
                guard
                    let channel = try? ChannelCompiler.compile(
                        ChannelDefinition(name: "c", stream: "s", params: world.params, whereClause: text), schema: world.schema)
                else {
                    Issue.record("generated clause does not compile: \(text)")
                    continue
                }
                if channel.plan != .scan { planned += 1 }
                if let t = channel.residualThreshold {
                    thresholds += 1
                    if t.isWholeResidual { wholeThresholds += 1 }
                }
                var index = ChannelIndex(channel: channel)
                var live: [InterestID: (params: [Value], refs: Int)] = [:]
                for _ in 0..<Int.random(in: 1...40, using: &world.rng) {
                    if !live.isEmpty && world.chance(4) {
                        let id = live.keys.randomElement(using: &world.rng)!
                        let removed = index.release(id)
                        live[id]!.refs -= 1
                        #expect(removed == (live[id]!.refs == 0))
                        if live[id]!.refs == 0 { live[id] = nil }
                    } else {
                        // Reuse a live binding now and then, to exercise aggregation.
                        let params = (!live.isEmpty && world.chance(3)) ? live.values.randomElement(using: &world.rng)!.params : world.values()
                        let id = index.acquire(params: params)
                        live[id, default: (params, 0)].refs += 1
                        #expect(live[id]!.params == params, "one interest per distinct binding")
                    }
                }
                #expect(index.count == live.count)
                var matched: [InterestID] = []
                for _ in 0..<8 {
                    let record = world.record()
                    matched.removeAll()
                    index.match(record, nowMillis: now, into: &matched)
                    let expected = Set(live.filter { channel.predicate.evaluate(record, $0.value.params, now) }.keys)
                    #expect(Set(matched) == expected, "\(text) planned as \(channel.plan) on \(record)")
                    #expect(matched.count == Set(matched).count, "no interest reported twice")
                }
            }
        }
        #expect(planned > 100, "enough channels used an index, not a scan")
        #expect(thresholds > 50, "enough channels checked a residual threshold")
        #expect(wholeThresholds > 10, "enough channels had a residual threshold alone")
    }
}
