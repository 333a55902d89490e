/// A client asking which broker to connect to.
public struct AssignmentRequest: Sendable, Hashable {
    /// The stable client id; it alone decides the broker within a region (consistent hashing), so a
    /// client reconnecting to an unchanged cluster lands on the same broker.
    public var clientID: String
    /// The region the client prefers, if any.
    public var region: String?
    /// Where the client is, if known; used to find the nearest region when its region cannot take it.
    public var location: GeoPoint?
    /// Broker ids the client just failed to reach.
    public var exclude: Set<String>

    public init(clientID: String, region: String? = nil, location: GeoPoint? = nil, exclude: Set<String> = []) {
        self.clientID = clientID
        self.region = region
        self.location = location
        self.exclude = exclude
    }
}

/// Where a client should connect, and where to try next if that fails.
public struct Assignment: Sendable, Hashable {
    /// The broker to connect to (its `load.connections` is placement's current count for it).
    public var broker: BrokerRecord
    /// Further brokers in preference order: distinct, never `broker`, first from the same region, then
    /// from the next regions in the same order the primary region was chosen by.
    public var alternates: [BrokerRecord]
    /// The region of `broker`.
    public var region: String

    public init(broker: BrokerRecord, alternates: [BrokerRecord], region: String) {
        self.broker = broker
        self.alternates = alternates
        self.region = region
    }
}

/// Tuning of `Placement`.
public struct PlacementPolicy: Sendable, Hashable {
    /// The bounded-load factor c (at least 1): within a region of n active brokers currently holding
    /// `total` clients, no broker takes a new client while it holds `ceil(c * (total + 1) / n)` or more.
    /// 1.25 keeps every broker within 25% of the mean while moving few clients off their hashed broker.
    public var loadBound: Double
    /// Ring points per broker: more points even out the brokers' shares, at a little memory per broker.
    public var virtualNodes: Int
    /// How many alternates an assignment carries.
    public var alternates: Int
    /// How long `reserve` remembers the broker it gave a client (from when it chose that broker; a
    /// repeat that keeps the broker does not extend it). A remembered client asking again gets the same
    /// broker without being counted twice; when the time is up, a reservation its broker has not yet
    /// reported on is taken off that broker's count.
    public var reservationLifetime: Duration
    /// The most clients remembered at once; beyond it the oldest reservations are forgotten first (they
    /// stay in their broker's count until its next report: a connect storm still spreads).
    public var maxReservations: Int

    public init(
        loadBound: Double = 1.25, virtualNodes: Int = 64, alternates: Int = 2, reservationLifetime: Duration = .seconds(30),
        maxReservations: Int = 100_000
    ) {
        self.loadBound = loadBound
        self.virtualNodes = virtualNodes
        self.alternates = alternates
        self.reservationLifetime = reservationLifetime
        self.maxReservations = maxReservations
    }
}

/// Assignment of clients to brokers: nearest region with capacity, then bounded-load consistent hashing
/// on the client id within the region.
///
/// **Eligible brokers.** A broker can be given a client when it is `active`, not in the request's
/// `exclude`, and holds fewer clients than its `capacity`. If the exclusions leave no eligible broker in
/// the whole cluster, they are ignored: a client that failed to reach a broker is better sent back to it
/// (the failure may have been its own network) than refused.
///
/// **Region choice.** If the request names a region that has an eligible broker, that region. Otherwise
/// the regions that have an eligible broker are ordered by, in turn:
/// 1. distance from a reference point set, nearest first: the client's `location` if given, else the
///    located brokers of the requested region (so a client of a down or full region fails over to the
///    geographically nearest one); a region's distance is that of its nearest located broker (in any
///    state); regions without a located broker — and every region when there is no reference point —
///    count as infinitely far;
/// 2. spare capacity, most first: the sum of `capacity - connections` over the region's eligible brokers;
/// 3. region name, ascending.
/// The first region is used; the others supply alternates when the chosen region has too few brokers.
///
/// **Within the region** (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads",
/// 2018): each active broker owns `virtualNodes` points on a hash ring (`HashRing`, `StableHash`);
/// from the client id's hash, walk clockwise and take the first eligible broker holding fewer than the
/// bound `ceil(c * (total + 1) / n)` clients (see `PlacementPolicy.loadBound`). With loads under the
/// bound a client always gets the same broker; a broker joining takes about 1/(n+1) of the clients; a
/// broker leaving moves only its own clients. When exclusions or capacities leave no eligible broker
/// under the bound, the least-loaded eligible broker is taken (the first met on the walk among equals).
/// Alternates are the next distinct eligible brokers on the same walk (ignoring the bound).
///
/// A `Placement` is built once per membership change (building hashes every ring point) and answers
/// `assign` with a binary search and a short walk. Between load reports, `noteAssigned` counts the
/// clients it hands out so that a burst of assignments still spreads; the next report replaces the count.
///
/// **Reservations (sticky assignment).** `reserve` is `assign` plus `noteAssigned` with a memory: it
/// remembers, per client id, the broker it chose (for `PlacementPolicy.reservationLifetime`, at most
/// `maxReservations` clients). A client asking again gets the same broker, and is not counted again,
/// while that broker is eligible, in the region the request is placed in, and under the bound with this
/// client taken off its count (so on an idle network, where no report has counted anyone yet, a client
/// asking 50 times still gets one broker, not a different one each time its own reservations push the
/// first over the bound). A reservation counts on its broker until that broker's next load report
/// (`updateLoad`), which replaces the count with the real one; after that the client is assumed to be
/// among the reported connections if the broker reports any. A reservation that expires while still
/// counted is taken off the count. A client given another broker moves its reservation there.
public struct Placement: Sendable {
    public let policy: PlacementPolicy

    struct Region: Sendable {
        var name: String
        /// Slots of the region's active brokers.
        var activeSlots: [Int]
        var ring: HashRing
        /// Distinct locations of the region's located brokers, in any state.
        var locations: [GeoPoint]
    }

    /// The brokers, sorted by id; a broker's index here is its slot.
    private let records: [BrokerRecord]
    private let slotByID: [String: Int]
    private let regionOfSlot: [Int]
    private let regions: [Region]
    private let regionByName: [String: Int]
    /// `regionDistances[a][b]`: km between the nearest located brokers of regions a and b (infinity when
    /// either has none). Precomputed, so failing over from a named region costs no trigonometry.
    private let regionDistances: [[Double]]
    /// Clients per slot: the last reported count plus those assigned since.
    private var connections: [Int]
    /// Clients per region, over its active brokers only (the `total` of the bound).
    private var regionTotals: [Int]
    /// Per slot: how many load reports `updateLoad` has taken. A reservation made since the last one
    /// is still in the slot's count.
    private var reportsBySlot: [Int]
    private var reservations = Reservations()

    /// Builds the rings. Duplicate ids keep the first record in (id, incarnation) order. Policy values
    /// out of range are clamped: `loadBound` to at least 1, `virtualNodes` to at least 1, `alternates`
    /// to at least 0.
    public init(brokers: [BrokerRecord], policy: PlacementPolicy = .init()) {
        var policy = policy
        policy.loadBound = policy.loadBound.isFinite ? max(1, policy.loadBound) : 1.25
        policy.virtualNodes = max(1, policy.virtualNodes)
        policy.alternates = max(0, policy.alternates)
        self.policy = policy

        var sorted = brokers.sorted { ($0.id, $0.incarnation) < ($1.id, $1.incarnation) }
        var seen = Set<String>()
        sorted.removeAll { !seen.insert($0.id).inserted }
        records = sorted

        var slotByID: [String: Int] = [:]
        for (slot, record) in sorted.enumerated() { slotByID[record.id] = slot }
        self.slotByID = slotByID

        let regionNames = Set(sorted.map(\.region)).sorted()
        var regionByName: [String: Int] = [:]
        for (index, name) in regionNames.enumerated() { regionByName[name] = index }
        self.regionByName = regionByName

        var regionOfSlot: [Int] = []
        var slotsByRegion = Array(repeating: [Int](), count: regionNames.count)
        var locationsByRegion = Array(repeating: [GeoPoint](), count: regionNames.count)
        var totals = Array(repeating: 0, count: regionNames.count)
        for (slot, record) in sorted.enumerated() {
            let region = regionByName[record.region] ?? 0
            regionOfSlot.append(region)
            if let location = record.location, !locationsByRegion[region].contains(location) {
                locationsByRegion[region].append(location)
            }
            if record.state == .active {
                slotsByRegion[region].append(slot)
                totals[region] += max(0, record.load.connections)
            }
        }
        self.regionOfSlot = regionOfSlot
        regions = regionNames.enumerated().map { index, name in
            let members = slotsByRegion[index].map { (id: sorted[$0].id, index: $0) }
            return Region(
                name: name,
                activeSlots: slotsByRegion[index],
                ring: HashRing(members: members, virtualNodes: policy.virtualNodes),
                locations: locationsByRegion[index]
            )
        }
        regionDistances = locationsByRegion.map { from in
            locationsByRegion.map { to in
                from.reduce(Double.infinity) { best, point in min(best, GeoPoint.nearestDistanceKm(from: point, to: to) ?? .infinity) }
            }
        }
        connections = sorted.map { max(0, $0.load.connections) }
        regionTotals = totals
        reportsBySlot = Array(repeating: 0, count: sorted.count)
    }

    /// Takes over `previous`'s reservations for brokers still here in the same incarnation: those still
    /// counted on their broker there are counted here too (a new placement starts from reported loads).
    public mutating func carryReservations(from previous: Placement) {
        for (client, reservation) in previous.reservations.inOrder {
            guard let slot = slotByID[reservation.brokerID], records[slot].incarnation == reservation.incarnation else { continue }
            var carried = reservation
            carried.countedInReport = nil
            if previous.isCounted(reservation) {
                setConnections(slot, connections[slot] + 1)
                carried.countedInReport = reportsBySlot[slot]
            }
            reservations.insert(client, carried)
        }
        _ = reservations.trim(to: policy.maxReservations)
    }

    /// How many clients are remembered.
    public var reservationCount: Int { reservations.byClient.count }

    /// `assign`, remembering the answer: see "Reservations" in the type's documentation. The chosen
    /// broker's count includes the client afterwards (once, however often it asks). `now` is the
    /// controller's clock; expired reservations are dropped first.
    public mutating func reserve(_ request: AssignmentRequest, now: ClusterTime) throws(TocsinError) -> Assignment {
        for old in reservations.expire(now: now) { uncount(old) }
        guard let held = reservations.byClient[request.clientID],
            let slot = slotByID[held.brokerID], records[slot].incarnation == held.incarnation
        else {
            let assignment = try assign(request, preferring: nil)
            remember(request.clientID, on: assignment.broker.id, now: now)
            return assignment
        }
        // Decide with the client taken off its broker: its own reservation must not push it away.
        // A reported (no longer counted) client is assumed connected there if the broker reports anyone.
        let counted = isCounted(held)
        let own = counted ? 1 : min(1, connections[slot])
        setConnections(slot, connections[slot] - own)
        let assignment: Assignment
        do {
            assignment = try assign(request, preferring: slot)
        } catch {
            setConnections(slot, connections[slot] + own)
            throw error
        }
        if assignment.broker.id == held.brokerID, own == 1 {
            setConnections(slot, connections[slot] + 1)
            return assignment
        }
        // Moved (or kept by a broker that reported no clients, so not among them): counted anew.
        reservations.remove(request.clientID)
        remember(request.clientID, on: assignment.broker.id, now: now)
        return assignment
    }

    /// Chooses a broker for the client (see the type's documentation for the rules).
    /// `.noBrokerAvailable` when no broker in the cluster is active and below its capacity.
    public func assign(_ request: AssignmentRequest) throws(TocsinError) -> Assignment {
        try assign(request, preferring: nil)
    }

    /// `assign`, taking `preferred` instead of walking the ring when it is eligible, in the chosen
    /// region and under the bound.
    private func assign(_ request: AssignmentRequest, preferring preferred: Int?) throws(TocsinError) -> Assignment {
        var excluded = excludedSlots(request.exclude)
        if excluded != nil, !anyEligible(excluded) {
            // Everything left is excluded: ignore the exclusions rather than refuse the client.
            excluded = nil
        }
        guard anyEligible(excluded) else {
            throw TocsinError(
                .noBrokerAvailable,
                records.isEmpty
                    ? "no broker is registered"
                    : "none of the \(records.count) registered brokers is active and below its capacity"
            )
        }
        let key = StableHash.hash(request.clientID)

        var order: [Int]?
        var chosen: Int
        if let name = request.region, let region = regionByName[name], eligibleCount(in: region, excluded) > 0 {
            chosen = region
        } else {
            let computed = regionOrder(for: request, excluded)
            order = computed
            guard let first = computed.first else {
                throw TocsinError(.noBrokerAvailable, "no region has a broker that can take a client")
            }
            chosen = first
        }
        guard let primary = primarySlot(in: chosen, key: key, excluded, preferring: preferred) else {
            throw TocsinError(.internalError, "placement found no broker in region \(regions[chosen].name)")
        }

        var alternates: [Int] = []
        if policy.alternates > 0 {
            collectAlternates(in: chosen, key: key, primary: primary, excluded, into: &alternates)
            if alternates.count < policy.alternates {
                for region in order ?? regionOrder(for: request, excluded) where region != chosen {
                    collectAlternates(in: region, key: key, primary: primary, excluded, into: &alternates)
                    if alternates.count >= policy.alternates { break }
                }
            }
        }
        return Assignment(broker: record(primary), alternates: alternates.map(record), region: regions[chosen].name)
    }

    /// Counts one more client on the broker, until the next `updateLoad` replaces the count.
    /// Unknown ids are ignored (the broker may have left since the assignment was made).
    public mutating func noteAssigned(to brokerID: String) {
        guard let slot = slotByID[brokerID] else { return }
        setConnections(slot, connections[slot] + 1)
    }

    /// Replaces the broker's client count with a reported one (negative counts as 0). Unknown ids are ignored.
    /// Reservations on the broker no longer count on it (the report includes those who connected).
    public mutating func updateLoad(of brokerID: String, connections count: Int) {
        guard let slot = slotByID[brokerID] else { return }
        setConnections(slot, max(0, count))
        reportsBySlot[slot] += 1
    }

    /// The broker's current client count as placement sees it, or nil for an unknown id.
    public func connections(of brokerID: String) -> Int? {
        slotByID[brokerID].map { connections[$0] }
    }

    // MARK: - Internals

    private func isCounted(_ reservation: Reservations.Entry) -> Bool {
        guard let slot = slotByID[reservation.brokerID], records[slot].incarnation == reservation.incarnation else { return false }
        return reservation.countedInReport == reportsBySlot[slot]
    }

    /// Takes a forgotten reservation off its broker's count if it is still on it.
    private mutating func uncount(_ reservation: Reservations.Entry) {
        guard isCounted(reservation), let slot = slotByID[reservation.brokerID] else { return }
        setConnections(slot, connections[slot] - 1)
    }

    private mutating func remember(_ client: String, on brokerID: String, now: ClusterTime) {
        guard let slot = slotByID[brokerID] else { return }
        setConnections(slot, connections[slot] + 1)
        reservations.insert(
            client,
            .init(
                brokerID: brokerID, incarnation: records[slot].incarnation, expiresAt: now + policy.reservationLifetime,
                countedInReport: reportsBySlot[slot]))
        _ = reservations.trim(to: policy.maxReservations)
    }

    private mutating func setConnections(_ slot: Int, _ value: Int) {
        let value = max(0, value)
        if records[slot].state == .active { regionTotals[regionOfSlot[slot]] += value - connections[slot] }
        connections[slot] = value
    }

    private func record(_ slot: Int) -> BrokerRecord {
        var record = records[slot]
        record.load.connections = connections[slot]
        return record
    }

    /// Nil when nothing is excluded (the common, fast case), else a flag per slot.
    private func excludedSlots(_ ids: Set<String>) -> [Bool]? {
        guard !ids.isEmpty else { return nil }
        var flags = Array(repeating: false, count: records.count)
        var any = false
        for id in ids {
            if let slot = slotByID[id] {
                flags[slot] = true
                any = true
            }
        }
        return any ? flags : nil
    }

    private func isEligible(_ slot: Int, _ excluded: [Bool]?) -> Bool {
        records[slot].state == .active && connections[slot] < records[slot].capacity && !(excluded?[slot] ?? false)
    }

    private func anyEligible(_ excluded: [Bool]?) -> Bool {
        records.indices.contains { isEligible($0, excluded) }
    }

    private func eligibleCount(in region: Int, _ excluded: [Bool]?) -> Int {
        var count = 0
        for slot in regions[region].activeSlots where isEligible(slot, excluded) { count += 1 }
        return count
    }

    /// Regions with an eligible broker, best first: nearest to the reference points, then most spare
    /// capacity, then by name.
    private func regionOrder(for request: AssignmentRequest, _ excluded: [Bool]?) -> [Int] {
        let requested = request.region.flatMap { regionByName[$0] }
        var candidates: [(region: Int, distance: Double, spare: Int)] = []
        candidates.reserveCapacity(regions.count)
        for index in regions.indices {
            var spare = 0
            var eligible = false
            for slot in regions[index].activeSlots where isEligible(slot, excluded) {
                eligible = true
                spare += records[slot].capacity - connections[slot]
            }
            guard eligible else { continue }
            let distance: Double =
                if let location = request.location {
                    GeoPoint.nearestDistanceKm(from: location, to: regions[index].locations) ?? .infinity
                } else if let requested {
                    regionDistances[requested][index]
                } else {
                    .infinity
                }
            candidates.append((index, distance, spare))
        }
        candidates.sort { a, b in
            if a.distance != b.distance { return a.distance < b.distance }
            if a.spare != b.spare { return a.spare > b.spare }
            return regions[a.region].name < regions[b.region].name
        }
        return candidates.map(\.region)
    }

    /// The bound `ceil(c * (total + 1) / n)`, tolerant of floating-point noise (1.1 * 10 is 11, not 12).
    static func loadBound(total: Int, brokers: Int, factor: Double) -> Int {
        let exact = factor * Double(total + 1) / Double(max(1, brokers))
        let whole = exact.rounded(.down)
        return Int(exact - whole <= 1e-9 * max(1, exact) ? whole : whole + 1)
    }

    /// `preferred` if it is an eligible broker of the region under the bound; else the first eligible
    /// broker under the bound on the clockwise walk from `key`, else the least-loaded eligible one (first
    /// met among equals). Nil only if the region has no eligible broker.
    private func primarySlot(in region: Int, key: UInt64, _ excluded: [Bool]?, preferring preferred: Int? = nil) -> Int? {
        let ring = regions[region].ring
        guard !ring.isEmpty else { return nil }
        let bound = Self.loadBound(
            total: regionTotals[region], brokers: regions[region].activeSlots.count, factor: policy.loadBound)
        if let preferred, regionOfSlot[preferred] == region, isEligible(preferred, excluded), connections[preferred] < bound {
            return preferred
        }
        var fallback: Int?
        var position = ring.firstPosition(atOrAfter: key)
        for _ in 0..<ring.count {
            let slot = ring.owners[position]
            if isEligible(slot, excluded) {
                if connections[slot] < bound { return slot }
                if fallback.map({ connections[slot] < connections[$0] }) ?? true { fallback = slot }
            }
            position += 1
            if position == ring.count { position = 0 }
        }
        return fallback
    }

    /// Appends to `alternates` the next distinct eligible brokers of `region` on the walk from `key`
    /// (skipping `primary` and those already chosen) until `policy.alternates` are collected.
    private func collectAlternates(
        in region: Int,
        key: UInt64,
        primary: Int,
        _ excluded: [Bool]?,
        into alternates: inout [Int]
    ) {
        let ring = regions[region].ring
        guard !ring.isEmpty, alternates.count < policy.alternates else { return }
        // Stop early once every eligible broker of the region has been met.
        var remaining = eligibleCount(in: region, excluded)
        if regionOfSlot[primary] == region, isEligible(primary, excluded) { remaining -= 1 }
        var position = ring.firstPosition(atOrAfter: key)
        var steps = 0
        while remaining > 0, steps < ring.count, alternates.count < policy.alternates {
            let slot = ring.owners[position]
            if slot != primary, isEligible(slot, excluded), !alternates.contains(slot) {
                alternates.append(slot)
                remaining -= 1
            }
            steps += 1
            position += 1
            if position == ring.count { position = 0 }
        }
    }
}
