import PropertyBased
import Testing

@testable import TocsinCore

/// For every plan kind: random interests under random acquire/release sequences, random events;
/// `match` (as a set) must equal the brute-force `predicate` over every live interest.
///
/// Shrinking is off: a scenario has hundreds of elements and shrinking one can take many minutes.
/// A failure names the event and the interests' params that disagree, and prints the seed to
/// reproduce it with `.fixedSeed(...)`.
@Suite(.shrinking(false)) struct MatcherPropertyTests {
    @Test(arguments: [true, false])
    func geoRadius(inclusive: Bool) async {
        let channel = Fixtures.emergenciesNearMe(inclusive: inclusive)
        await propertyCheck(
            count: 150, input: GeoGen.params.array(of: 1...150), OpGen.ops, GeoGen.event.array(of: 1...40)
        ) { pool, ops, events in
            var pool = pool
            var events = events
            // Put some events exactly on interests' centers and some interests' circles exactly
            // through events, so `<=` versus `<` and zero radii are decided at the boundary.
            for j in events.indices where j % 5 == 0 {
                if case .double(let lat) = pool[j % pool.count][0], case .double(let lon) = pool[j % pool.count][1],
                    GeoIndex.inRange(lat: lat, lon: lon)
                {
                    events[j][0] = .geo(GeoPoint(lat: lat, lon: lon))
                }
            }
            for i in pool.indices where i % 4 == 0 {
                if case .geo(let e) = events[i % events.count][0], case .double(let lat) = pool[i][0],
                    case .double(let lon) = pool[i][1]
                {
                    pool[i][2] = .double(e.distanceKm(to: GeoPoint(lat: lat, lon: lon)))
                }
            }
            let ops = ops + [Op](repeating: .acquire(0), count: 3) + pool.indices.map { Op.acquire($0) }
            _ = BruteForceHarness.run(channel: channel, pool: pool, ops: ops, events: events)
        }
    }

    @Test func equality() async {
        let region = Gen.int(in: 0...12).map { i -> Value in
            i == 12 ? .null : .string(["", "n", "s", "e", "w", "N", "nn", "é", "e\u{301}", "x y", "0", "a"][i])
        }
        let params = zip(region, Gen.int(in: 0...5)).map { r, s -> [Value] in [r, .int(Int64(s))] }
        let event = zip(region, Gen.int(in: 0...5)).map { r, s -> Record in [r, .int(Int64(s))] }
        await propertyCheck(count: 150, input: params.array(of: 1...60), OpGen.ops, event.array(of: 1...30)) { pool, ops, events in
            _ = BruteForceHarness.run(channel: Fixtures.regionAlerts(), pool: pool, ops: ops, events: events)
        }
    }

    @Test func membership() async {
        let tag = Gen.int(in: 0...5).map { ["fire", "flood", "quake", "storm", "", "Fire"][$0] }
        let params = zip(tag.array(of: 0...4), Gen.int(in: 0...5), Gen.int(in: 0...15)).map { tags, s, bad -> [Value] in
            [bad == 0 ? .null : .stringList(tags), .int(Int64(s))]
        }
        let event = zip(tag, Gen.int(in: 0...5), Gen.int(in: 0...9)).map { t, s, missing -> Record in
            [missing == 0 ? .null : .string(t), .int(Int64(s))]
        }
        await propertyCheck(count: 150, input: params.array(of: 1...60), OpGen.ops, event.array(of: 1...30)) { pool, ops, events in
            _ = BruteForceHarness.run(channel: Fixtures.taggedAlerts(), pool: pool, ops: ops, events: events)
        }
    }

    @Test(arguments: [Comparison.lessThan, .lessOrEqual, .greaterThan, .greaterOrEqual])
    func threshold(_ comparison: Comparison) async {
        // Small integers force runs of equal bounds; specials cover infinities, NaN and null.
        let number = Gen.frequency(
            (6.0, Gen.int(in: -10...10).map { Value.double(Double($0)) }),
            (3.0, Gen.double(in: -10...10).map { Value.double($0) }),
            (
                1.0,
                Gen.int(in: 0...5).map { [Value.double(.infinity), .double(-.infinity), .double(.nan), .null, .int(3), .double(-0.0)][$0] }
            ))
        let event = zip(number, Gen.int(in: 0...9)).map { x, k -> Record in [x, .string(k == 0 ? "ignored" : "k")] }
        await propertyCheck(
            count: 150, input: number.map { [$0] }.array(of: 1...200), OpGen.ops, event.array(of: 1...30)
        ) { pool, ops, events in
            _ = BruteForceHarness.run(channel: Fixtures.thresholdChannel(comparison), pool: pool, ops: ops, events: events)
        }
    }

    @Test func scan() async {
        let params = Gen.int(in: -6...6).map { [Value.int(Int64($0))] }
        let event = Gen.int(in: -50...50).map { [Value.int(Int64($0))] }
        await propertyCheck(count: 100, input: params.array(of: 1...30), OpGen.ops, event.array(of: 1...20)) { pool, ops, events in
            _ = BruteForceHarness.run(channel: Fixtures.scanChannel(), pool: pool, ops: ops, events: events)
        }
    }
}
