#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The geo index of a dataset field: records' points bucketed in cells of 0.1° × 0.1°, answering
/// "which keys may lie within r km of c" by visiting the cells a circle can touch. Candidates are
/// a superset; the enrich clause decides each exactly with `GeoPoint.distanceKm`.
///
/// Cost: the cells a circle covers (about (2r/11 km + 1)² away from the poles), or, when that is
/// more than the points held (huge radii, circles around a pole), every point.
struct PointGrid: Sendable {
    static let cellDegrees = 0.1
    static let latCells = 1800
    static let lonCells = 3600

    private var cells: [Int: Set<Value>] = [:]
    private var points: [Value: GeoPoint] = [:]

    var count: Int { points.count }

    mutating func insert(_ key: Value, at point: GeoPoint) {
        remove(key)
        points[key] = point
        cells[PointGrid.cell(point), default: []].insert(key)
    }

    mutating func remove(_ key: Value) {
        guard let old = points.removeValue(forKey: key) else { return }
        let cell = PointGrid.cell(old)
        cells[cell]?.remove(key)
        if cells[cell]?.isEmpty == true { cells[cell] = nil }
    }

    /// Keys whose point may be within `radiusKm` of `centre` (a superset of those that are).
    func candidates(near centre: GeoPoint, radiusKm: Double, into out: inout [Value]) {
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
            for (key, point) in points where point.lat >= latLow && point.lat <= latHigh { out.append(key) }
            return
        }
        for row in rowLow...rowHigh {
            if let lonRange {
                let first = Int(floor((lonRange.low + 180) / PointGrid.cellDegrees))
                let last = Int(floor((lonRange.high + 180) / PointGrid.cellDegrees))
                for column in first...last {
                    let wrapped = ((column % PointGrid.lonCells) + PointGrid.lonCells) % PointGrid.lonCells
                    if let keys = cells[row * PointGrid.lonCells + wrapped] { out.append(contentsOf: keys) }
                }
            } else {
                for column in 0..<PointGrid.lonCells {
                    if let keys = cells[row * PointGrid.lonCells + column] { out.append(contentsOf: keys) }
                }
            }
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
