#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The geo index of a dataset field: records' points bucketed in cells of 0.1° × 0.1°, answering
/// "which rows may lie within r km of c" by visiting the cells a circle can touch. Candidates are
/// a superset; the enrich clause decides each exactly with `GeoPoint.distanceKm`. Records are
/// named by their row in the table (`DatasetTable`): an int, cheap to hash and to hand back.
///
/// Cost: the cells a circle covers (about (2r/11 km + 1)² away from the poles), or, when that is
/// more than the points held (huge radii, circles around a pole), every point.
struct PointGrid: Sendable {
    static let cellDegrees = 0.1
    static let latCells = 1800
    static let lonCells = 3600

    /// A point held, with its row: a cell's points are checked against the circle right here,
    /// so candidates in the cell's corners outside it cost nothing further.
    private struct Entry {
        var row: Int
        var point: GeoPoint
    }

    private var cells: [Int: [Entry]] = [:]
    private var points: [Int: GeoPoint] = [:]

    var count: Int { points.count }

    mutating func insert(_ key: Int, at point: GeoPoint) {
        remove(key)
        points[key] = point
        cells[PointGrid.cell(point), default: []].append(Entry(row: key, point: point))
    }

    mutating func remove(_ key: Int) {
        guard let old = points.removeValue(forKey: key) else { return }
        let cell = PointGrid.cell(old)
        // A cell holds the points of 0.1° x 0.1°: a short scan.
        if let i = cells[cell]?.firstIndex(where: { $0.row == key }) {
            cells[cell]!.swapAt(i, cells[cell]!.count - 1)
            cells[cell]!.removeLast()
        }
        if cells[cell]?.isEmpty == true { cells[cell] = nil }
    }

    /// Whether `point` may be within `radiusKm` of `centre`: the exact distance, with a margin
    /// for rounding (the clause decides exactly; this only keeps candidates a superset).
    @inline(__always)
    private static func near(_ point: GeoPoint, _ centre: GeoPoint, _ radiusKm: Double) -> Bool {
        centre.distanceKm(to: point) <= radiusKm * (1 + 1e-9) + 1e-9
    }

    /// Rows whose point may be within `radiusKm` of `centre` (a superset of those that are).
    func candidates(near centre: GeoPoint, radiusKm: Double, into out: inout [Int]) {
        guard radiusKm.isFinite, radiusKm >= 0, !points.isEmpty else { return }
        let angle = radiusKm / GeoPoint.earthRadiusKm  // radians
        // A margin of 0.1% plus a microdegree covers rounding in the bounds below.
        let dLat = angle * 180 / .pi * 1.001 + 1e-6
        let latLow = centre.lat - dLat
        let latHigh = centre.lat + dLat
        var lonRange: (low: Double, high: Double)? = nil  // nil: every longitude
        if latLow > -90, latHigh < 90, angle < .pi / 2 {
            let s = sin(angle) / cos(centre.lat * .pi / 180)
            if s < 1 {
                let dLon = asin(s) * 180 / .pi * 1.001 + 1e-6
                if dLon < 180 { lonRange = (centre.lon - dLon, centre.lon + dLon) }
            }
        }
        if let range = lonRange,
            Int(floor((range.high + 180) / PointGrid.cellDegrees)) - Int(floor((range.low + 180) / PointGrid.cellDegrees)) + 1 >= PointGrid.lonCells
        {
            lonRange = nil  // the range wraps onto itself: every column, once
        }
        let rowLow = PointGrid.row(max(-90, latLow))
        let rowHigh = PointGrid.row(min(90, latHigh))
        let columns: Int
        if let lonRange {
            columns = Int(floor((lonRange.high + 180) / PointGrid.cellDegrees)) - Int(floor((lonRange.low + 180) / PointGrid.cellDegrees)) + 1
        } else {
            columns = PointGrid.lonCells
        }
        let cellCount = (rowHigh - rowLow + 1) * min(columns, PointGrid.lonCells)
        if cellCount >= points.count {
            for (key, point) in points where point.lat >= latLow && point.lat <= latHigh && Self.near(point, centre, radiusKm) { out.append(key) }
            return
        }
        for row in rowLow...rowHigh {
            if let lonRange {
                let first = Int(floor((lonRange.low + 180) / PointGrid.cellDegrees))
                let last = Int(floor((lonRange.high + 180) / PointGrid.cellDegrees))
                for column in first...last {
                    let wrapped = ((column % PointGrid.lonCells) + PointGrid.lonCells) % PointGrid.lonCells
                    for e in cells[row * PointGrid.lonCells + wrapped] ?? [] where Self.near(e.point, centre, radiusKm) { out.append(e.row) }
                }
            } else {
                for column in 0..<PointGrid.lonCells {
                    for e in cells[row * PointGrid.lonCells + column] ?? [] where Self.near(e.point, centre, radiusKm) { out.append(e.row) }
                }
            }
        }
    }

    /// The candidates of `candidates(near:radiusKm:)`, handed to `body` cell by cell, nearest
    /// cell first, each with a lower bound of the distance from the centre to any point of the
    /// cells after it; `body` returns false to stop. Where cells do not apply (a circle around a
    /// pole or across every longitude, or more cells than points), every candidate comes at once
    /// with bound ∞.
    func rings(near centre: GeoPoint, radiusKm: Double, _ body: ([Int], Double) -> Bool) {
        guard radiusKm.isFinite, radiusKm >= 0, !points.isEmpty else { return }
        let angle = radiusKm / GeoPoint.earthRadiusKm
        let dLat = angle * 180 / .pi * 1.001 + 1e-6
        let latLow = centre.lat - dLat, latHigh = centre.lat + dLat
        var everything: [Int] {
            var out: [Int] = []
            candidates(near: centre, radiusKm: radiusKm, into: &out)
            return out
        }
        guard latLow > -90, latHigh < 90, angle < .pi / 2 else { _ = body(everything, .infinity); return }
        let s = sin(angle) / cos(centre.lat * .pi / 180)
        guard s < 1 else { _ = body(everything, .infinity); return }
        let dLon = asin(s) * 180 / .pi * 1.001 + 1e-6
        let first = Int(floor((centre.lon - dLon + 180) / PointGrid.cellDegrees))
        let last = Int(floor((centre.lon + dLon + 180) / PointGrid.cellDegrees))
        let rowLow = PointGrid.row(latLow), rowHigh = PointGrid.row(latHigh)
        guard dLon < 180, last - first + 1 < PointGrid.lonCells, (rowHigh - rowLow + 1) * (last - first + 1) < points.count else {
            _ = body(everything, .infinity)
            return
        }
        // The smallest cosine of a latitude in the rows visited: longitude differences shrink by it.
        let edge = max(abs(Double(rowLow) * PointGrid.cellDegrees - 90), abs(Double(rowHigh + 1) * PointGrid.cellDegrees - 90))
        let cosMin = edge >= 90 ? 0 : cos(edge * .pi / 180)
        let toRadians = Double.pi / 180
        let lonStart = Double(first) * PointGrid.cellDegrees - 180
        /// No point of the cell is nearer: it is at least Δφ away in latitude (so R·Δφ) and at
        /// least Δλ in longitude (so 2R·asin(cos φ_min · sin(Δλ/2)), by the haversine), Δφ and Δλ
        /// the gaps between the centre and the cell's ranges (0 inside them).
        func bound(row: Int, column: Int) -> Double {
            let south = Double(row) * PointGrid.cellDegrees - 90
            let west = lonStart + Double(column - first) * PointGrid.cellDegrees
            let dLatGap = max(0, south - centre.lat, centre.lat - (south + PointGrid.cellDegrees)) * toRadians
            let dLonGap = max(0, west - centre.lon, centre.lon - (west + PointGrid.cellDegrees)) * toRadians
            let km = max(GeoPoint.earthRadiusKm * dLatGap, 2 * GeoPoint.earthRadiusKm * asin(min(1, cosMin * sin(min(dLonGap, .pi) / 2))))
            return km * (1 - 1e-9) - 1e-9
        }
        var order: [(bound: Double, cell: Int)] = []
        for row in rowLow...rowHigh {
            for column in first...last {
                let wrapped = ((column % PointGrid.lonCells) + PointGrid.lonCells) % PointGrid.lonCells
                let cell = row * PointGrid.lonCells + wrapped
                guard cells[cell] != nil else { continue }
                order.append((bound(row: row, column: column), cell))
            }
        }
        order.sort { $0.bound < $1.bound }
        var ring: [Int] = []
        for (i, next) in order.enumerated() {
            ring.removeAll(keepingCapacity: true)
            for e in cells[next.cell]! where Self.near(e.point, centre, radiusKm) { ring.append(e.row) }
            guard body(ring, i + 1 < order.count ? order[i + 1].bound : .infinity) else { return }
        }
    }

    private static func row(_ lat: Double) -> Int {
        min(latCells - 1, max(0, Int(floor((lat + 90) / cellDegrees))))
    }

    private static func cell(_ p: GeoPoint) -> Int {
        let column = min(lonCells - 1, max(0, Int(floor((p.lon + 180) / cellDegrees))))
        return row(p.lat) * lonCells + column
    }
}
