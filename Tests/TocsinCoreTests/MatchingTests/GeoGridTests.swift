import Testing

@testable import TocsinCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The latitude-scaled grid of `GeoIndex` (rows of 90°/2^k, fewer columns towards the poles)
/// and its cell table.
@Suite struct GeoGridTests {
    @Test func columnsAreAboutSquareInKilometresAndNeverFewerThanOne() {
        for level in 0..<GeoIndex.levelCount {
            let rows = 2 << level
            let rowDegrees = 90 / Double(1 << level)
            for row in Set([0, 1, rows / 4, rows / 2 - 1, rows / 2, rows * 3 / 4, rows - 2, rows - 1]) where row >= 0 && row < rows {
                let count = GeoIndex.columnCount(level: level, row: row)
                #expect(count >= 1 && count <= 4 << level)
                // Symmetric about the equator.
                #expect(count == GeoIndex.columnCount(level: level, row: rows - 1 - row))
                // Never narrower in km than the row is tall (measured at the row's poleward edge).
                let south = Double(row) * rowDegrees - 90
                let edge = max(abs(south), abs(south + rowDegrees))
                let widthKm = 360 / Double(count) * cos(edge * .pi / 180)
                #expect(widthKm >= rowDegrees * (1 - 1e-9) || edge >= 90 - 1e-9, "level \(level) row \(row)")
            }
        }
        // Near the equator at a fine level, within a fraction of a percent of square.
        let level = 12
        let row = 2 << (level - 1)
        let count = GeoIndex.columnCount(level: level, row: row)
        #expect(abs(360 / Double(count) / (90 / Double(1 << level)) - 1) < 0.01)
    }

    @Test func longitudeOneEightyIsMinusOneEighty() {
        for level in 0..<GeoIndex.levelCount {
            for row in [0, (2 << level) / 3, (2 << level) - 1] {
                let count = GeoIndex.columnCount(level: level, row: row)
                #expect(GeoIndex.column(180, count: count) == GeoIndex.column(-180, count: count))
                for lon in [-180, (-180.0).nextUp, -90, 0, 90, 180.0.nextDown, 180] {
                    #expect((0..<count).contains(GeoIndex.column(lon, count: count)))
                }
            }
        }
    }

    /// Small circles where the columns are narrowest in degrees and the grid wraps: high
    /// latitudes (rows of few columns, circles up to the large list's pole limit) and the
    /// antimeridian; events on, near and just across the boundaries, against brute force.
    @Test(arguments: [true, false])
    func highLatitudesAndTheAntimeridianAgainstBruteForce(inclusive: Bool) {
        var rng = SplitMix(seed: inclusive ? 21 : 22)
        func point() -> GeoPoint {
            let lat: Double
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: lat = .random(in: 80...90, using: &rng)
            case 1: lat = -.random(in: 80...90, using: &rng)
            case 2: lat = .random(in: 60...89.95, using: &rng) * (Bool.random(using: &rng) ? 1 : -1)
            default: lat = .random(in: -75...75, using: &rng)
            }
            let lon: Double
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: lon = 180
            case 1: lon = -180
            case 2: lon = .random(in: -180...180, using: &rng)
            default:
                let off = Double.random(in: 0...1.5, using: &rng)
                lon = Bool.random(using: &rng) ? 180 - off : -180 + off
            }
            return GeoPoint(lat: lat, lon: lon)
        }
        let centers = (0..<400).map { _ in point() }
        let pool: [[Value]] = centers.map { c in
            let r = Int.random(in: 0..<10, using: &rng) == 0 ? Double.random(in: 50...400, using: &rng) : .random(in: 0.05...30, using: &rng)
            return Fixtures.geoParams(c.lat, c.lon, r)
        }
        var events: [Record] = []
        for _ in 0..<600 {
            // Mostly near a center, at about its radius, so boundaries are exercised.
            let k = Int.random(in: 0..<pool.count, using: &rng)
            guard case .double(let r) = pool[k][2] else { continue }
            let c = centers[k]
            let d = r * .random(in: 0.9...1.1, using: &rng) / GeoPoint.earthRadiusKm * 180 / .pi
            let bearing = Double.random(in: 0..<(2 * .pi), using: &rng)
            let lat = c.lat + d * cos(bearing)
            let lon = c.lon + d * sin(bearing) / max(0.01, cos(c.lat * .pi / 180))
            let p = GeoGen.normalized(lat, lon)
            events.append(Fixtures.geoEvent(p.lat, p.lon))
        }
        events += (0..<200).map { _ in let p = point(); return Fixtures.geoEvent(p.lat, p.lon) }
        var ops: [Op] = (0..<pool.count).map { .acquire($0) }
        ops += (0..<150).map { _ in .release(.random(in: 0..<1_000_000, using: &rng)) }
        ops += (0..<150).map { _ in .acquire(.random(in: 0..<1_000_000, using: &rng)) }
        let harness = BruteForceHarness.run(
            channel: Fixtures.emergenciesNearMe(inclusive: inclusive), pool: pool, ops: ops, events: events, checkEvery: 150)
        #expect(harness.matchedTotal > 300, "the data should produce plenty of matches")
    }

    @Test func cellTableAgainstDictionary() {
        var rng = SplitMix(seed: 5)
        var table = CellTable()
        var reference: [UInt64: Int32] = [:]
        // Few distinct keys, so inserts, finds and removes collide and runs wrap around.
        let keys: [UInt64] = (0..<3000).map { _ in
            UInt64.random(in: 0..<(1 << 40), using: &rng) | (Bool.random(using: &rng) ? 0 : 1 << 63)
        }
        for step in 0..<60_000 {
            let key = keys[Int.random(in: 0..<(step < 30_000 ? keys.count : 300), using: &rng)]
            switch Int.random(in: 0..<3, using: &rng) {
            case 0:
                if reference[key] == nil {
                    let value = Int32.random(in: 0..<Int32.max, using: &rng)
                    table.insert(key, value)
                    reference[key] = value
                }
            case 1:
                table.remove(key)
                reference[key] = nil
            default:
                #expect(table.find(key) == reference[key])
            }
            #expect(table.count == reference.count)
        }
        for key in keys { #expect(table.find(key) == reference[key]) }
        for key in reference.keys { table.remove(key) }
        #expect(table.count == 0)
        for key in keys { #expect(table.find(key) == nil) }
    }
}
