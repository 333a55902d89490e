import TocsinCore

#if canImport(Glibc)
    import Glibc
#endif

/// Benchmark data, built once per (kind, size) in a benchmark's setup and kept for the process.
///
/// **Geo (EmergenciesNearMe):** `distance(location, point($lat, $lon)) <= $radiusKm &&
/// severity >= $minSeverity`. Subscribers sit at uniformly random points of a square region
/// around 45°N, radius uniform in 1...20 km (E[r²] = 140.3 km², so a circle covers π·E[r²] ≈
/// 441 km² on average), minSeverity uniform in 1...3; events are uniform in the same region
/// (minus a 20 km border) with severity uniform in 1...5, so the residual passes 80% of the
/// geo candidates. Expected matches per event = n · 441 km² · 0.8 / area, so the region's area
/// is set to n · 3.53 km² (at 1M: 3.53 × 10⁶ km², a square of ~1880 km; at 10k: ~188 km):
/// ~100 matches per event at every size. The measured mean is printed in setup.
///
/// **Equality (RegionAlerts):** `region == $region && severity >= $minSeverity` with n
/// interests over n/125 regions (125 interests per region, 80% pass the residual: ~100 matches).
public final class Fixture: @unchecked Sendable {  // used by one benchmark thread at a time
    public var index: ChannelIndex
    public let events: [Record]
    var next = 0
    let churnParams: [[Value]]
    var churnNext = 0
    /// Keeps the optimizer from dropping the work.
    public var sink = 0

    init(index: ChannelIndex, events: [Record], churnParams: [[Value]]) {
        self.index = index
        self.events = events
        self.churnParams = churnParams
    }

    @inline(__always)
    public func matchNext(into result: inout [InterestID]) {
        result.removeAll(keepingCapacity: true)
        index.match(events[next], nowMillis: 0, into: &result)
        next = next == events.count - 1 ? 0 : next + 1
        sink &+= result.count
    }

    public func churnOnce() {
        let id = index.acquire(params: churnParams[churnNext])
        index.release(id)
        churnNext = churnNext == churnParams.count - 1 ? 0 : churnNext + 1
    }
}

public enum Fixtures {
    public enum Kind: Sendable { case geo, equality }

    nonisolated(unsafe) private static var cache: [String: Fixture] = [:]

    public static func prepare(_ kind: Kind, _ n: Int) {
        let key = "\(kind)-\(n)"
        guard cache[key] == nil else { return }
        let start = ContinuousClock.now
        let fixture = kind == .geo ? geo(n) : equality(n)
        let built = ContinuousClock.now - start
        var result: [InterestID] = []
        var total = 0
        for event in fixture.events {
            result.removeAll(keepingCapacity: true)
            fixture.index.match(event, nowMillis: 0, into: &result)
            total += result.count
        }
        let mean = Double(total) / Double(fixture.events.count)
        print("[\(kind) n=\(n)] built \(fixture.index.count) interests in \(built); mean matches per event: \(mean)")
        cache[key] = fixture
    }

    public static func get(_ kind: Kind, _ n: Int) -> Fixture { cache["\(kind)-\(n)"]! }

    static let kmPerDegree = Double.pi / 180 * GeoPoint.earthRadiusKm

    public static func geo(_ n: Int) -> Fixture {
        var rng = SplitMix(seed: 42)
        let side = (Double(n) * 3.53).squareRoot()  // km
        let centerLat = 45.0
        let halfLat = side / 2 / kmPerDegree
        let halfLon = side / 2 / (kmPerDegree * cos(centerLat * .pi / 180))
        func point(border: Double) -> (Double, Double) {
            let bLat = border / kmPerDegree
            let bLon = border / (kmPerDegree * cos(centerLat * .pi / 180))
            return (
                Double.random(in: (centerLat - halfLat + bLat)...(centerLat + halfLat - bLat), using: &rng),
                Double.random(in: (10 - halfLon + bLon)...(10 + halfLon - bLon), using: &rng)
            )
        }
        var index = ChannelIndex(channel: emergenciesNearMe())
        for _ in 0..<n {
            let (lat, lon) = point(border: 0)
            let radius = Double.random(in: 1...20, using: &rng)
            _ = index.acquire(params: [.double(lat), .double(lon), .double(radius), .int(.random(in: 1...3, using: &rng))])
        }
        let events: [Record] = (0..<4096).map { _ in
            let (lat, lon) = point(border: 20)
            return [.geo(GeoPoint(lat: lat, lon: lon)), .int(.random(in: 1...5, using: &rng))]
        }
        let churn: [[Value]] = (0..<4096).map { _ in
            let (lat, lon) = point(border: 0)
            return [.double(lat), .double(lon), .double(.random(in: 1...20, using: &rng)), .int(2)]
        }
        return Fixture(index: index, events: events, churnParams: churn)
    }

    public static func equality(_ n: Int) -> Fixture {
        var rng = SplitMix(seed: 43)
        let regions = max(1, n / 125)
        var index = ChannelIndex(channel: regionAlerts())
        var made = 0
        while index.count < n {
            made += 1
            _ = index.acquire(params: [
                .string("region-\(Int.random(in: 0..<regions, using: &rng))"), .int(Int64(made)), .int(.random(in: 1...3, using: &rng)),
            ])
        }
        let events: [Record] = (0..<4096).map { _ in
            [.string("region-\(Int.random(in: 0..<regions, using: &rng))"), .int(.random(in: 1...5, using: &rng))]
        }
        return Fixture(index: index, events: events, churnParams: [])
    }

    // MARK: Channels, compiled as the broker compiles them

    /// Record: [location: geo, severity: int]; params: [lat, lon, radiusKm, minSeverity].
    public static func emergenciesNearMe() -> CompiledChannel {
        let schema = try! StreamSchema(fields: [FieldSpec(name: "location", type: .geo), FieldSpec(name: "severity", type: .int)])
        let definition = ChannelDefinition(
            name: "EmergenciesNearMe", stream: "emergencies",
            params: [
                ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
                ChannelParameter(name: "radiusKm", type: .double), ChannelParameter(name: "minSeverity", type: .int),
            ],
            whereClause: "distance(location, point($lat, $lon)) <= $radiusKm && severity >= $minSeverity")
        return try! ChannelCompiler.compile(definition, schema: schema)
    }

    /// Record: [region: string, severity: int]; params: [region, subscriberTag, minSeverity]
    /// (the tag only makes interests distinct).
    public static func regionAlerts() -> CompiledChannel {
        let schema = try! StreamSchema(fields: [FieldSpec(name: "region", type: .string), FieldSpec(name: "severity", type: .int)])
        let definition = ChannelDefinition(
            name: "RegionAlerts", stream: "alerts",
            params: [
                ChannelParameter(name: "region", type: .string), ChannelParameter(name: "tag", type: .int),
                ChannelParameter(name: "minSeverity", type: .int),
            ],
            whereClause: "region == $region && severity >= $minSeverity")
        return try! ChannelCompiler.compile(definition, schema: schema)
    }
}
