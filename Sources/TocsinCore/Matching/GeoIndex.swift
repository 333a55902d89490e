#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One copy of a geo interest in a grid cell, with everything the lookup needs inline
/// (64 bytes: one cache line).
struct GeoEntry: BucketEntry {
    var lat: Double
    var lon: Double
    var radiusKm: Double
    /// `cos(lat)`, computed exactly as `GeoPoint.distanceKm` computes it.
    var cosLat: Double
    /// Haversine terms `a = sin²(Δlat/2) + cos·cos·sin²(Δlon/2)` below `aInside` are certainly
    /// within the radius, above `aOutside` certainly beyond it (see `GeoIndex.scan`); -1/+inf
    /// (always decide exactly) for the large list.
    var aInside: Double
    var aOutside: Double
    /// Half extents of the circle's bounding box in degrees, rounded up, with a safety margin;
    /// infinite for entries of the large list.
    var halfLat: Float
    var halfLon: Float
    var id: Int32
}

/// Hierarchical spatial grid for `.geoRadius(field, lat, lon, radiusKm, inclusive)`.
///
/// Level `k` cuts the globe into square cells of `90 / 2^k` degrees (level 0: 90°, level 16:
/// ~0.0014°, ~150 m). An interest is stored at the finest level whose cell is at least as
/// wide as its bounding box, once in every cell the box overlaps (at most 2×2; the box is split
/// at the antimeridian). A lookup probes the event's one cell at each populated level, plus the
/// "large" list. Circles of `largeRadiusKm` or more, circles that reach a pole, and boxes wider
/// than 90° of longitude go to the large list, which every lookup scans.
///
/// The conjunct is decided exactly: `GeoPoint.distanceKm` from the event's point to the
/// interest's point (as `distance(field, point(...))` evaluates it; the haversine is symmetric)
/// `<= r` (`< r` when not inclusive). An interest whose latitude is outside
/// [-90, 90], whose longitude is outside [-180, 180], or whose radius is NaN, negative or
/// missing never matches; so does an event whose point is null or out of range.
struct GeoIndex: Sendable {
    let field: Int
    let latOperand: Operand
    let lonOperand: Operand
    let radiusOperand: Operand
    let inclusive: Bool

    static let levelCount = 17
    static let largeRadiusKm = 2000.0
    /// An interest goes to the finest level whose cells are at least this fraction of its box's
    /// extent, so it overlaps at most 2×2 cells. (0.5 and 9 — up to 3×3 cells — scans ~25% fewer
    /// entries per event, but at 10^6 interests took 713 MB instead of 449 MB for no clear gain.)
    static let cellToExtent = 1.0
    static let maxCellsPerInterest = 4
    /// Key of the large list in `bucketByCell`.
    private static let largeKey = UInt64.max

    /// Cells per degree at a level.
    @inline(__always)
    private static func scale(_ level: Int) -> Double { Double(1 << level) / 90 }

    private var bucketByCell: [UInt64: Int32] = [:]
    private var cellOfBucket: [UInt64] = []
    private var buckets = Buckets<GeoEntry>()
    /// Interests stored at each level (levels with none are not probed).
    private var levelPopulation = [Int](repeating: 0, count: levelCount)
    private var largeBucket: Int32 = -1
    /// By interest id: up to `maxCellsPerInterest` slots, flattened.
    private var slots: [BucketSlot] = []
    private var slotCounts: [UInt8] = []
    private var levelOf: [Int8] = []

    init(field: Int, lat: Operand, lon: Operand, radiusKm: Operand, inclusive: Bool) {
        self.field = field
        self.latOperand = lat
        self.lonOperand = lon
        self.radiusOperand = radiusKm
        self.inclusive = inclusive
    }

    private static func operand(_ operand: Operand, _ params: [Value]) -> Double? {
        if case .param(let i) = operand, i < 0 || i >= params.count { return nil }
        return operand.value(in: params)
    }

    @inline(__always)
    static func inRange(lat: Double, lon: Double) -> Bool {
        lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
    }

    @inline(__always)
    private static func cellKey(level: Int, latIndex: Int, lonIndex: Int) -> UInt64 {
        UInt64(level) << 48 | UInt64(latIndex) << 24 | UInt64(lonIndex)
    }

    /// The cell row of a latitude at a level (the north pole joins the last row).
    @inline(__always)
    private static func latIndex(_ lat: Double, level: Int) -> Int {
        let rows = 2 << level  // 180° / (90° / 2^k)
        return min(Int(((lat + 90) * scale(level)).rounded(.down)), rows - 1)
    }

    /// The cell column of a longitude at a level (180° joins -180°).
    @inline(__always)
    private static func lonIndex(_ lon: Double, level: Int) -> Int {
        let columns = 4 << level
        let i = Int(((lon + 180) * scale(level)).rounded(.down))
        return i >= columns ? i - columns : i
    }

    /// Where an interest goes: nil when it can never match; `level == -1` for the large list.
    private func placement(of params: [Value]) -> (entry: GeoEntry, level: Int, cells: [UInt64])? {
        guard let lat = Self.operand(latOperand, params), let lon = Self.operand(lonOperand, params),
            let r = Self.operand(radiusOperand, params),
            Self.inRange(lat: lat, lon: lon), r >= 0  // false for NaN
        else { return nil }
        var entry = GeoEntry(
            lat: lat, lon: lon, radiusKm: r, cosLat: 0, aInside: -1, aOutside: .infinity,
            halfLat: .infinity, halfLon: .infinity, id: 0)
        guard r < Self.largeRadiusKm else { return (entry, -1, []) }
        // d <= r  <=>  a <= sin²(r / 2R) for r < πR. Margins (relative 1e-9, absolute 1e-280) are
        // far wider than the rounding of either side; in between, distanceKm decides.
        entry.cosLat = cos(lat * (Double.pi / 180))
        let half = sin(r / (2 * GeoPoint.earthRadiusKm))
        entry.aInside = half * half * (1 - 1e-9) - 1e-280
        entry.aOutside = half * half * (1 + 1e-9) + 1e-280

        // Bounding box of the spherical cap, widened by a margin far above rounding error.
        let degrees = 180 / Double.pi
        let delta = r / GeoPoint.earthRadiusKm  // angular radius, radians
        let halfLat = delta * degrees * (1 + 1e-6) + 1e-7
        guard abs(lat) + halfLat < 89.9 else { return (entry, -1, []) }  // reaches a pole
        // Widest longitude of a cap of angular radius δ around latitude φ: asin(sin δ / cos φ).
        let x = sin(halfLat / degrees) / cos(lat / degrees)
        guard x < 0.7 else { return (entry, -1, []) }  // wider than ~±44° of longitude
        let halfLon = asin(x) * degrees * (1 + 1e-6) + 1e-7
        entry.halfLat = Float(halfLat).nextUp
        entry.halfLon = Float(halfLon).nextUp

        let extent = 2 * max(halfLat, halfLon)
        var level = Self.levelCount - 1
        while level > 0 && 90 / Double(1 << level) < extent * Self.cellToExtent { level -= 1 }
        guard 90 / Double(1 << level) >= extent * Self.cellToExtent else { return (entry, -1, []) }

        let rowLo = Self.latIndex(lat - halfLat, level: level)
        let rowHi = Self.latIndex(lat + halfLat, level: level)
        // Longitude intervals inside [-180, 180]: the box is split at the antimeridian.
        var columns: [Int] = []
        func addColumns(_ from: Double, _ to: Double) {
            let lo = Int(((from + 180) * Self.scale(level)).rounded(.down))
            let hi = Int(((to + 180) * Self.scale(level)).rounded(.down))
            let count = 4 << level
            for c in lo...hi {
                let wrapped = c >= count ? c - count : c
                if !columns.contains(wrapped) { columns.append(wrapped) }
            }
        }
        let west = lon - halfLon
        let east = lon + halfLon
        if west < -180 {
            addColumns(-180, east)
            addColumns(west + 360, 180)
        } else if east > 180 {
            addColumns(west, 180)
            addColumns(-180, east - 360)
        } else {
            addColumns(west, east)
        }
        var cells: [UInt64] = []
        for row in rowLo...rowHi {
            for column in columns { cells.append(Self.cellKey(level: level, latIndex: row, lonIndex: column)) }
        }
        guard cells.count <= Self.maxCellsPerInterest else { return (entry, -1, []) }
        return (entry, level, cells)
    }

    mutating func insert(_ id: Int32, params: [Value]) {
        let i = Int(id)
        if slotCounts.count <= i {
            let grow = i + 1 - slotCounts.count
            slotCounts.append(contentsOf: repeatElement(0, count: grow))
            levelOf.append(contentsOf: repeatElement(-1, count: grow))
            slots.append(contentsOf: repeatElement(BucketSlot(bucket: -1, pos: -1), count: grow * Self.maxCellsPerInterest))
        }
        guard let placed = placement(of: params) else { return }
        var entry = placed.entry
        entry.id = id
        let level = placed.level
        var cells = placed.cells
        if level < 0 {
            if largeBucket < 0 {
                largeBucket = buckets.makeBucket()
                bucketByCell[Self.largeKey] = largeBucket
                setCell(of: largeBucket, Self.largeKey)
            }
            cells = [Self.largeKey]
        } else {
            levelPopulation[level] += 1
        }
        levelOf[i] = Int8(level)
        for (k, cell) in cells.enumerated() {
            let bucket: Int32
            if let b = bucketByCell[cell] {
                bucket = b
            } else {
                bucket = buckets.makeBucket()
                bucketByCell[cell] = bucket
                setCell(of: bucket, cell)
            }
            let pos = buckets.append(entry, to: bucket)
            slots[i * Self.maxCellsPerInterest + k] = BucketSlot(bucket: bucket, pos: pos)
        }
        slotCounts[i] = UInt8(cells.count)
    }

    private mutating func setCell(of bucket: Int32, _ cell: UInt64) {
        if Int(bucket) == cellOfBucket.count { cellOfBucket.append(cell) } else { cellOfBucket[Int(bucket)] = cell }
    }

    mutating func remove(_ id: Int32) {
        let i = Int(id)
        guard i < slotCounts.count, slotCounts[i] > 0 else { return }
        let n = Int(slotCounts[i])
        slotCounts[i] = 0
        if levelOf[i] >= 0 { levelPopulation[Int(levelOf[i])] -= 1 }
        levelOf[i] = -1
        for k in 0..<n {
            let slot = slots[i * Self.maxCellsPerInterest + k]
            if let moved = buckets.remove(at: slot.pos, from: slot.bucket) {
                let base = Int(moved) * Self.maxCellsPerInterest
                for j in 0..<Int(slotCounts[Int(moved)]) where slots[base + j].bucket == slot.bucket {
                    slots[base + j].pos = slot.pos
                    break
                }
            }
            if buckets.isEmpty(slot.bucket) && slot.bucket != largeBucket {
                bucketByCell.removeValue(forKey: cellOfBucket[Int(slot.bucket)])
                buckets.freeBucket(slot.bucket)
            }
        }
    }

    /// Calls `body` with the id of every interest whose circle holds the record's point.
    @inline(__always)
    func forEachMatch(in record: Record, _ body: (Int32) -> Void) {
        guard field >= 0, field < record.count, case .geo(let point) = record[field],
            Self.inRange(lat: point.lat, lon: point.lon)
        else { return }
        let cosPointLat = cos(point.lat * (Double.pi / 180))
        for level in 0..<Self.levelCount where levelPopulation[level] > 0 {
            let key = Self.cellKey(
                level: level, latIndex: Self.latIndex(point.lat, level: level), lonIndex: Self.lonIndex(point.lon, level: level))
            if let bucket = bucketByCell[key] {
                scan(buckets.lists[Int(bucket)], point, cosPointLat, body)
            }
        }
        if largeBucket >= 0 {
            scan(buckets.lists[Int(largeBucket)], point, cosPointLat, body)
        }
    }

    /// Decides each entry's conjunct exactly, mostly without trigonometry: with x = Δlat/2 and
    /// y = Δlon/2 (radians, Δlon wrapped into [0°, 180°]) and c = cos(lat₁)·cos(lat₂), the
    /// haversine term a = sin²x + c·sin²y lies in [(x − x³/6)² + c·(y − y³/6)², x² + c·y²]
    /// (as x − x³/6 <= sin x <= x for x >= 0). Only when that interval reaches the entry's
    /// margin band around sin²(r/2R) is `GeoPoint.distanceKm` called, and it decides.
    @inline(__always)
    private func scan(_ entries: [GeoEntry], _ point: GeoPoint, _ cosPointLat: Double, _ body: (Int32) -> Void) {
        let inclusive = self.inclusive
        let halfRad = Double.pi / 360
        entries.withUnsafeBufferPointer { entries in
            for e in entries {
                let dLat = abs(point.lat - e.lat)
                var dLon = abs(point.lon - e.lon)
                if dLon > 180 { dLon = 360 - dLon }
                if dLat > Double(e.halfLat) || dLon > Double(e.halfLon) { continue }
                let x = dLat * halfRad
                let y = dLon * halfRad
                let c = cosPointLat * e.cosLat
                if x * x + c * (y * y) < e.aInside {
                    body(e.id)
                    continue
                }
                let sx = x - x * x * x / 6
                let sy = y - y * y * y / 6
                if sx * sx + c * (sy * sy) > e.aOutside { continue }
                let d = point.distanceKm(to: GeoPoint(lat: e.lat, lon: e.lon))
                if inclusive ? d <= e.radiusKm : d < e.radiusKm { body(e.id) }
            }
        }
    }
}
