import Testing

@testable import TocsinCore

@Suite struct GeoIndexTests {
    func matches(_ index: ChannelIndex, _ lat: Double, _ lon: Double, severity: Int64 = 5) -> Set<InterestID> {
        var result: [InterestID] = []
        index.match(Fixtures.geoEvent(lat, lon, severity: severity), nowMillis: 0, into: &result)
        #expect(Set(result).count == result.count, "no duplicates")
        return Set(result)
    }

    @Test func radiusAndResidual() {
        var index = ChannelIndex(channel: Fixtures.emergenciesNearMe())
        let amsterdam = index.acquire(params: Fixtures.geoParams(52.37, 4.90, 10, minSeverity: 3))
        #expect(matches(index, 52.40, 4.95) == [amsterdam])  // ~4.7 km
        #expect(matches(index, 52.50, 4.90).isEmpty)  // ~14.5 km
        #expect(matches(index, 52.40, 4.95, severity: 2).isEmpty)  // residual
    }

    @Test func acrossTheAntimeridian() {
        var index = ChannelIndex(channel: Fixtures.emergenciesNearMe())
        let east = index.acquire(params: Fixtures.geoParams(-18.0, 179.95, 20))
        let west = index.acquire(params: Fixtures.geoParams(-18.0, -179.95, 20))
        let onLine = index.acquire(params: Fixtures.geoParams(10, 180, 1))
        #expect(matches(index, -18.0, -179.97) == [east, west])  // ~8.5 km from east
        #expect(matches(index, -18.0, 179.97) == [east, west])
        #expect(matches(index, -18.0, 179.7).isEmpty)  // ~26 km from east
        #expect(matches(index, 10, -180) == [onLine])  // -180 is 180
        #expect(matches(index, 10, 179.995) == [onLine])
        #expect(matches(index, 10, -179.995) == [onLine])
    }

    @Test func nearThePoles() {
        var index = ChannelIndex(channel: Fixtures.emergenciesNearMe())
        let north = index.acquire(params: Fixtures.geoParams(89.95, 0, 10))
        let northWide = index.acquire(params: Fixtures.geoParams(89.95, 0, 12))
        let south = index.acquire(params: Fixtures.geoParams(-90, 0, 1))
        let highLat = index.acquire(params: Fixtures.geoParams(70, 20, 100))
        // Across the pole: 0.1° of latitude, ~11.1 km.
        #expect(matches(index, 89.95, 180) == [northWide])
        #expect(matches(index, 90, -123) == [north, northWide])
        #expect(matches(index, -89.995, 123) == [south])  // ~0.56 km from the pole, any longitude
        #expect(matches(index, -89.99, -60).isEmpty)  // ~1.1 km
        // At 70°N, 2.5° of longitude is ~95 km: the box must be widened in longitude.
        #expect(matches(index, 70, 22.5) == [highLat])
        #expect(matches(index, 70, 17.5) == [highLat])
        #expect(matches(index, 70, 23).isEmpty)
    }

    @Test func zeroRadius() {
        var inclusive = ChannelIndex(channel: Fixtures.emergenciesNearMe(inclusive: true))
        var strict = ChannelIndex(channel: Fixtures.emergenciesNearMe(inclusive: false))
        let a = inclusive.acquire(params: Fixtures.geoParams(48.86, 2.35, 0))
        _ = strict.acquire(params: Fixtures.geoParams(48.86, 2.35, 0))
        #expect(matches(inclusive, 48.86, 2.35) == [a])
        #expect(matches(inclusive, 48.86, 2.350001).isEmpty)
        #expect(matches(strict, 48.86, 2.35).isEmpty)
    }

    @Test(arguments: [
        (GeoPoint(lat: 52.37, lon: 4.90), GeoPoint(lat: 52.1, lon: 5.3)),
        (GeoPoint(lat: -18.0, lon: 179.99), GeoPoint(lat: -18.2, lon: -179.8)),
        (GeoPoint(lat: 88.0, lon: 10), GeoPoint(lat: 87.0, lon: 170)),
        (GeoPoint(lat: 0, lon: 0), GeoPoint(lat: 10, lon: 10)),
        (GeoPoint(lat: 1, lon: 1), GeoPoint(lat: 1, lon: 1)),
    ])
    func inclusiveVersusStrictExactlyAtTheBoundary(center: GeoPoint, event: GeoPoint) {
        let r = event.distanceKm(to: center)
        var inclusive = ChannelIndex(channel: Fixtures.emergenciesNearMe(inclusive: true))
        var strict = ChannelIndex(channel: Fixtures.emergenciesNearMe(inclusive: false))
        let a = inclusive.acquire(params: Fixtures.geoParams(center.lat, center.lon, r))
        let b = strict.acquire(params: Fixtures.geoParams(center.lat, center.lon, r))
        let c = strict.acquire(params: Fixtures.geoParams(center.lat, center.lon, r.nextUp))
        #expect(matches(inclusive, event.lat, event.lon) == [a])
        #expect(matches(strict, event.lat, event.lon) == [c])
        _ = b
    }

    @Test func largeAndInfiniteRadii() {
        var index = ChannelIndex(channel: Fixtures.emergenciesNearMe())
        let continent = index.acquire(params: Fixtures.geoParams(50, 10, 3000))
        let everywhere = index.acquire(params: Fixtures.geoParams(0, 0, .infinity))
        let justLarge = index.acquire(params: Fixtures.geoParams(0, 0, 2000))
        #expect(matches(index, 40.4, -3.7) == [continent, everywhere])  // Madrid, ~1800 km from 50N 10E
        #expect(matches(index, -33.9, 151.2) == [everywhere])
        #expect(matches(index, 0, 17.9) == [justLarge, everywhere])
    }

    @Test func invalidParamsNeverMatchAndDoNotCrash() {
        var index = ChannelIndex(channel: Fixtures.emergenciesNearMe())
        let bad: [[Value]] = [
            Fixtures.geoParams(95, 0, 100), Fixtures.geoParams(-90.5, 0, 100), Fixtures.geoParams(0, 181, 100),
            Fixtures.geoParams(0, -180.0001, 100), Fixtures.geoParams(0, 0, -1), Fixtures.geoParams(0, 0, .nan),
            Fixtures.geoParams(.nan, 0, 10), Fixtures.geoParams(0, .infinity, 10),
            [.null, .double(0), .double(10), .int(0)], [.string("x"), .double(0), .double(10), .int(0)],
            [.double(0)],  // too few params
        ]
        let ids = bad.map { index.acquire(params: $0) }
        #expect(index.count == bad.count)
        for lat in stride(from: -90.0, through: 90, by: 15) {
            for lon in stride(from: -180.0, through: 180, by: 30) {
                #expect(matches(index, lat, lon).isEmpty)
            }
        }
        for id in ids { #expect(index.release(id) == true) }
        #expect(index.count == 0)
    }

    @Test func eventWithoutALocationOrOutOfRangeMatchesNothing() {
        var index = ChannelIndex(channel: Fixtures.emergenciesNearMe())
        _ = index.acquire(params: Fixtures.geoParams(0, 0, .infinity))
        var result: [InterestID] = []
        index.match([.null, .int(5)], nowMillis: 0, into: &result)
        index.match([.string("0,0"), .int(5)], nowMillis: 0, into: &result)
        index.match(Fixtures.geoEvent(91, 0), nowMillis: 0, into: &result)
        index.match(Fixtures.geoEvent(.nan, 0), nowMillis: 0, into: &result)
        #expect(result.isEmpty)
    }

    @Test func distanceIsSymmetric() {
        var rng = SplitMix(seed: 3)
        for _ in 0..<10_000 {
            let a = GeoPoint(lat: .random(in: -90...90, using: &rng), lon: .random(in: -180...180, using: &rng))
            let b = GeoPoint(
                lat: min(90, max(-90, a.lat + .random(in: -3...3, using: &rng))), lon: .random(in: -180...180, using: &rng))
            #expect(a.distanceKm(to: b) == b.distanceKm(to: a))
        }
    }

    /// Thousands of interests, dense city clusters plus global ones, with churn, against brute force.
    @Test(arguments: [true, false])
    func denseClustersAgainstBruteForce(inclusive: Bool) {
        var rng = SplitMix(seed: inclusive ? 11 : 12)
        func point() -> GeoPoint {
            if Int.random(in: 0..<4, using: &rng) == 0 {
                return GeoPoint(lat: .random(in: -90...90, using: &rng), lon: .random(in: -180...180, using: &rng))
            }
            let c = GeoGen.cities.randomElement(using: &rng)!
            return GeoGen.normalized(c.lat + .random(in: -0.5...0.5, using: &rng), c.lon + .random(in: -0.5...0.5, using: &rng))
        }
        let pool: [[Value]] = (0..<4000).map { _ in
            let p = point()
            let r =
                Int.random(in: 0..<50, using: &rng) == 0 ? Double.random(in: 500...5000, using: &rng) : .random(in: 0.1...60, using: &rng)
            return Fixtures.geoParams(p.lat, p.lon, r, minSeverity: .random(in: 0...3, using: &rng))
        }
        var ops: [Op] = (0..<4000).map { _ in .acquire(.random(in: 0..<1_000_000, using: &rng)) }
        ops += (0..<1500).map { _ in .release(.random(in: 0..<1_000_000, using: &rng)) }
        let events: [Record] = (0..<300).map { _ in
            let p = point()
            return Fixtures.geoEvent(p.lat, p.lon, severity: .random(in: 1...5, using: &rng))
        }
        let harness = BruteForceHarness.run(
            channel: Fixtures.emergenciesNearMe(inclusive: inclusive), pool: pool, ops: ops, events: events, checkEvery: 2000)
        #expect(harness.matchedTotal > 1000, "the data should produce plenty of matches")
    }
}
