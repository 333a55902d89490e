#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One copy of a geo interest in a grid cell, with what the lookup needs to decide it inline
/// (32 bytes: two per cache line).
struct GeoEntry: BucketEntry {
    var lat: Double
    var lon: Double
    /// Grid entries: `sin²(r / 2R)`, the haversine term `a` at the radius (d <= r <=> a <= it,
    /// for r < πR). Entries of the large list: the radius in km itself.
    var limit: Double
    /// `cos(lat)` rounded to Float; its error (< 1e-7 relative) is far inside the margins of
    /// `GeoIndex.scan`.
    var cosLat: Float
    var id: Int32
}

/// Hierarchical spatial grid for `.geoRadius(field, lat, lon, radiusKm, inclusive)`.
///
/// Level `k` cuts the globe into rows of `90 / 2^k` degrees of latitude (level 0: 90°, level
/// 16: ~0.0014°, ~150 m), and each row into columns about as wide in km as the row is tall
/// (fewer, wider columns towards the poles; see `columnCount`). An interest is stored at the
/// finest level at which its bounding box overlaps at most `maxCellsPerInterest` cells, once in
/// each of them (the box is split at the antimeridian). A lookup probes the event's one cell at
/// each populated level, plus the "large" list. Circles of `largeRadiusKm` or more, circles that
/// reach a pole, and boxes wider than ~88° of longitude go to the large list, which every lookup
/// scans.
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
    static let maxCellsPerInterest = 4
    /// Relative and absolute margins around `sin²(r / 2R)` within which `scan` leaves the
    /// decision to `GeoPoint.distanceKm`. They cover the Float `cosLat` (< 1e-7 relative), the
    /// rounding of both computations (~1e-15 relative; ~1e-15 rad absolute in the longitude
    /// difference across the antimeridian, hence the absolute margin, which only makes circles
    /// under ~1 mm and events within ~1 mm of a boundary take the exact path).
    private static let relativeMargin = 1e-6
    private static let absoluteMargin = 1e-20

    /// Row height in degrees at a level.
    @inline(__always)
    private static func rowDegrees(_ level: Int) -> Double { 90 / Double(1 << level) }

    private var bucketByCell = CellTable()
    private var cellOfBucket: [UInt64] = []
    private var buckets = Buckets<GeoEntry>()
    /// Interests stored at each level (levels with none are not probed).
    private var levelPopulation = [Int](repeating: 0, count: levelCount)
    private var largeBucket: Int32 = -1
    /// By interest id: up to `maxCellsPerInterest` slots, flattened.
    private var slots: [BucketSlot] = []
    private var slotCounts: [UInt8] = []
    private var levelOf: [Int8] = []
    /// By interest id: the radius, for the rare decisions `scan` leaves to `distanceKm`.
    private var radii: [Double] = []

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
    private static func cellKey(level: Int, row: Int, column: Int) -> UInt64 {
        UInt64(level) << 48 | UInt64(row) << 24 | UInt64(column)
    }

    /// The row of a latitude at a level (the north pole joins the last row).
    @inline(__always)
    static func row(_ lat: Double, level: Int) -> Int {
        let rows = 2 << level  // 180° / (90° / 2^k)
        return min(Int(((lat + 90) / rowDegrees(level)).rounded(.down)), rows - 1)
    }

    /// Columns of a row: cells about as wide in km as they are tall. Taken at the row's poleward
    /// edge moved one more row poleward, so that a box as tall as a row, centred in the next row
    /// towards the pole, is still at most two columns wide. A pure function of (level, row): the
    /// insert and the lookup compute it alike.
    @inline(__always)
    static func columnCount(level: Int, row: Int) -> Int {
        let h = rowDegrees(level)
        let south = Double(row) * h - 90
        let edge = max(abs(south), abs(south + h)) + h
        guard edge < 90 else { return 1 }
        return max(1, Int((Double(4 << level) * cos(edge * (Double.pi / 180))).rounded(.down)))
    }

    /// The column of a longitude in a row of `count` columns, before wrapping (180° gives
    /// exactly `count`, the same column as -180°: 360 · count / 360 is exact). Monotonic in
    /// `lon` (each rounded step is), so a point inside a box lies between the columns of its
    /// edges.
    @inline(__always)
    private static func rawColumn(_ lon: Double, count: Int) -> Int {
        Int(((lon + 180) * Double(count) / 360).rounded(.down))
    }

    @inline(__always)
    static func column(_ lon: Double, count: Int) -> Int {
        let i = rawColumn(lon, count: count)
        return i >= count ? i - count : i
    }

    /// The cells a box (longitudes as intervals inside [-180, 180]) overlaps at a level, or nil
    /// when that is more than `maxCellsPerInterest`.
    private static func cells(
        level: Int, south: Double, north: Double, lonIntervals: [(Double, Double)]
    ) -> [UInt64]? {
        let rowLo = row(south, level: level)
        let rowHi = row(north, level: level)
        guard rowHi - rowLo < maxCellsPerInterest else { return nil }
        var cells: [UInt64] = []
        for r in rowLo...rowHi {
            let count = columnCount(level: level, row: r)
            var columns: [Int] = []
            for (from, to) in lonIntervals {
                let lo = rawColumn(from, count: count)
                let hi = rawColumn(to, count: count)
                guard hi - lo < maxCellsPerInterest else { return nil }
                for c in lo...hi {
                    let wrapped = c >= count ? c - count : c
                    if !columns.contains(wrapped) { columns.append(wrapped) }
                }
            }
            for c in columns { cells.append(cellKey(level: level, row: r, column: c)) }
            if cells.count > maxCellsPerInterest { return nil }
        }
        return cells
    }

    /// Where an interest goes: nil when it can never match; `level == -1` for the large list.
    private func placement(of params: [Value]) -> (entry: GeoEntry, radiusKm: Double, level: Int, cells: [UInt64])? {
        guard let lat = Self.operand(latOperand, params), let lon = Self.operand(lonOperand, params),
            let r = Self.operand(radiusOperand, params),
            Self.inRange(lat: lat, lon: lon), r >= 0  // false for NaN
        else { return nil }
        let large = (GeoEntry(lat: lat, lon: lon, limit: r, cosLat: 0, id: 0), r, -1, [UInt64]())
        guard r < Self.largeRadiusKm else { return large }
        // d <= r  <=>  a <= sin²(r / 2R) for r < πR.
        let half = sin(r / (2 * GeoPoint.earthRadiusKm))
        let entry = GeoEntry(
            lat: lat, lon: lon, limit: half * half, cosLat: Float(cos(lat * (Double.pi / 180))), id: 0)

        // Bounding box of the spherical cap, widened by a margin far above rounding error.
        let degrees = 180 / Double.pi
        let delta = r / GeoPoint.earthRadiusKm  // angular radius, radians
        let halfLat = delta * degrees * (1 + 1e-6) + 1e-7
        guard abs(lat) + halfLat < 89.9 else { return large }  // reaches a pole
        // Widest longitude of a cap of angular radius δ around latitude φ: asin(sin δ / cos φ).
        let x = sin(halfLat / degrees) / cos(lat / degrees)
        guard x < 0.7 else { return large }  // wider than ~±44° of longitude
        let halfLon = asin(x) * degrees * (1 + 1e-6) + 1e-7

        // Longitude intervals inside [-180, 180]: the box is split at the antimeridian.
        let west = lon - halfLon
        let east = lon + halfLon
        let lonIntervals: [(Double, Double)] =
            west < -180 ? [(-180, east), (west + 360, 180)] : east > 180 ? [(west, 180), (-180, east - 360)] : [(west, east)]
        // From the finest level whose rows are at least half as tall as the box (coarser ones
        // only when the box overlaps too many cells).
        var level = Self.levelCount - 1
        while level > 0 && Self.rowDegrees(level) < halfLat { level -= 1 }
        while level >= 0 {
            if let cells = Self.cells(level: level, south: lat - halfLat, north: lat + halfLat, lonIntervals: lonIntervals) {
                return (entry, r, level, cells)
            }
            level -= 1
        }
        return large
    }

    mutating func insert(_ id: Int32, params: [Value]) {
        let i = Int(id)
        if slotCounts.count <= i {
            let grow = i + 1 - slotCounts.count
            slotCounts.append(contentsOf: repeatElement(0, count: grow))
            levelOf.append(contentsOf: repeatElement(-1, count: grow))
            radii.append(contentsOf: repeatElement(0, count: grow))
            slots.append(contentsOf: repeatElement(BucketSlot(bucket: -1, pos: -1), count: grow * Self.maxCellsPerInterest))
        }
        guard let placed = placement(of: params) else { return }
        var entry = placed.entry
        entry.id = id
        radii[i] = placed.radiusKm
        let level = placed.level
        var cells = placed.cells
        if level < 0 {
            if largeBucket < 0 {
                largeBucket = buckets.makeBucket()
                setCell(of: largeBucket, CellTable.emptyKey)
            }
            cells = [CellTable.emptyKey]
        } else {
            levelPopulation[level] += 1
        }
        levelOf[i] = Int8(level)
        for (k, cell) in cells.enumerated() {
            let bucket: Int32
            if level < 0 {
                bucket = largeBucket
            } else if let b = bucketByCell.find(cell) {
                bucket = b
            } else {
                bucket = buckets.makeBucket()
                bucketByCell.insert(cell, bucket)
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
                bucketByCell.remove(cellOfBucket[Int(slot.bucket)])
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
        // At 10^6 interests each level's cell is three dependent cache misses (table slot, list
        // reference, list header) before its scan; look all levels up first, so that the
        // levels' misses overlap instead of queueing one behind the other.
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: Self.levelCount) { found in
            var count = 0
            for level in 0..<Self.levelCount where levelPopulation[level] > 0 {
                let row = Self.row(point.lat, level: level)
                let column = Self.column(point.lon, count: Self.columnCount(level: level, row: row))
                if let bucket = bucketByCell.find(Self.cellKey(level: level, row: row, column: column)) {
                    found[count] = bucket
                    count += 1
                }
            }
            var touched = 0
            for k in 0..<count { touched &+= buckets.lists[Int(found[k])].count }
            keep(touched)
            radii.withUnsafeBufferPointer { radii in
                for k in 0..<count {
                    scan(buckets.lists[Int(found[k])], point, cosPointLat, radii, body)
                }
            }
        }
        if largeBucket >= 0 {
            let inclusive = self.inclusive
            for e in buckets.lists[Int(largeBucket)] {
                let d = point.distanceKm(to: GeoPoint(lat: e.lat, lon: e.lon))
                if inclusive ? d <= e.limit : d < e.limit { body(e.id) }
            }
        }
    }

    /// Entries `scan` filters per pass, into a stack buffer of their positions.
    private static let chunk = 64

    /// Decides each entry's conjunct exactly, mostly without trigonometry: with x = Δlat/2 and
    /// y = Δlon/2 (radians, Δlon wrapped into [0°, 180°]) and c = cos(lat₁)·cos(lat₂), the
    /// haversine term a = sin²x + c·sin²y lies in [(x − x³/6)² + c·(y − y³/6)², x² + c·y²]
    /// (as x − x³/6 <= sin x <= x for x >= 0). Only when that interval reaches the margin band
    /// around sin²(r/2R) is `GeoPoint.distanceKm` called, and it decides.
    ///
    /// In two stages per chunk of entries: a branch-free pass keeps the positions of those whose
    /// lower bound is within reach (about one in six: a branch on it would often be
    /// mispredicted), then the few kept are decided.
    @inline(__always)
    private func scan(
        _ entries: [GeoEntry], _ point: GeoPoint, _ cosPointLat: Double, _ radii: UnsafeBufferPointer<Double>,
        _ body: (Int32) -> Void
    ) {
        let inclusive = self.inclusive
        let halfRad = Double.pi / 360
        let sixth = 1.0 / 6
        let above = 1 + Self.relativeMargin
        let below = 1 - Self.relativeMargin
        entries.withUnsafeBufferPointer { entries in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: Self.chunk) { kept in
                var start = 0
                while start < entries.count {
                    let end = min(start + Self.chunk, entries.count)
                    var n = 0
                    for k in start..<end {
                        let e = entries[k]
                        let x = abs(point.lat - e.lat) * halfRad
                        let dLon = abs(point.lon - e.lon)
                        let y = min(dLon, 360 - dLon) * halfRad
                        let c = cosPointLat * Double(e.cosLat)
                        let sx = x - x * (x * x) * sixth
                        let sy = y - y * (y * y) * sixth
                        kept[n] = Int32(truncatingIfNeeded: k)
                        n &+= sx * sx + c * (sy * sy) > e.limit * above + Self.absoluteMargin ? 0 : 1
                    }
                    for j in 0..<n {
                        let e = entries[Int(kept[j])]
                        let x = abs(point.lat - e.lat) * halfRad
                        let dLon = abs(point.lon - e.lon)
                        let y = min(dLon, 360 - dLon) * halfRad
                        let c = cosPointLat * Double(e.cosLat)
                        if x * x + c * (y * y) < e.limit * below - Self.absoluteMargin {
                            body(e.id)
                            continue
                        }
                        let d = point.distanceKm(to: GeoPoint(lat: e.lat, lon: e.lon))
                        let r = radii[Int(e.id)]
                        if inclusive ? d <= r : d < r { body(e.id) }
                    }
                    start = end
                }
            }
        }
    }
}

