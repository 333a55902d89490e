/// When a broker counts as balanced.
///
/// Within a region, let m be the mean clients per active broker (clients of the region's active and
/// draining brokers, divided by its active brokers). A broker is balanced when its clients are within
/// `t = max(relativeTolerance * m, absoluteTolerance)` of m, i.e. in the band `[ceil(m - t), floor(m + t)]`.
/// The absolute floor keeps small clusters from ping-ponging single clients (3 vs 6 clients is fine).
public struct RebalancePolicy: Sendable, Hashable {
    public var relativeTolerance: Double
    public var absoluteTolerance: Int

    public init(relativeTolerance: Double = 0.10, absoluteTolerance: Int = 5) {
        self.relativeTolerance = relativeTolerance
        self.absoluteTolerance = absoluteTolerance
    }
}

/// Migrate `count` clients from broker `from` to broker `to`.
public struct Move: Sendable, Hashable {
    public var from: String
    public var to: String
    public var count: Int

    public init(from: String, to: String, count: Int) {
        self.from = from
        self.to = to
        self.count = count
    }
}

/// The migrations that bring a cluster back into balance. Each (from, to) pair appears once.
public struct RebalancePlan: Sendable, Hashable {
    public var moves: [Move]

    public init(moves: [Move] = []) {
        self.moves = moves
    }

    public var isEmpty: Bool { moves.isEmpty }
    /// Clients migrated in total: the sum of the moves' counts.
    public var totalClients: Int { moves.reduce(0) { $0 + $1.count } }
}

/// Plans live migrations: the fewest client moves that bring every active broker within its region's
/// band (see `RebalancePolicy`) and empty every draining broker.
///
/// **Per region.** Clients are placed by region, so they are balanced by region and never moved to
/// another region — except the clients of draining brokers in a region with no active broker left,
/// which go to the nearest region (by distance from the draining broker's location, else from its
/// region's located brokers; then most spare capacity, then name), and what that region cannot hold
/// without overfilling goes on to the next nearest, and so on.
///
/// **Fewest moves.** Let E be the clients above the band's upper edge (plus every client of a draining
/// broker) and D the free places below its lower edge. Any plan moves at least max(E, D) clients;
/// this one moves exactly that when capacities allow:
/// 1. pair the largest excess with the largest deficit (draining brokers first) until one side runs out;
/// 2. excess left: give it to the brokers with the most room below the upper edge, levelling them;
///    draining clients that still do not fit go to the brokers with the most room below their capacity;
/// 3. deficit left: take it from the brokers with the most clients above the lower edge, levelling them.
/// A broker never both sends and receives in one plan, receivers never go past their capacity (when
/// capacity makes the band unreachable, what fits is moved and the rest stays), and applying a plan and
/// planning again yields no moves. Ties are broken by broker id, so plans are deterministic.
public enum Rebalancer {
    /// The plan for a snapshot of brokers (their `load.connections`). Pure; duplicate ids keep the first
    /// record in (id, incarnation) order; negative counts and capacities are taken as 0.
    public static func plan(brokers: [BrokerRecord], policy: RebalancePolicy = .init()) -> RebalancePlan {
        let cluster = Snapshot(brokers)
        var loads = cluster.loads
        var moves = MoveList()
        for group in groups(cluster, policy: policy) {
            planGroup(group, cluster: cluster, loads: &loads, policy: policy, moves: &moves)
        }
        return RebalancePlan(moves: moves.moves)
    }

    /// True when every active broker is within its region's band and no draining broker holds clients.
    /// A plan can be empty while this is false: when capacities make the band unreachable.
    public static func isBalanced(brokers: [BrokerRecord], policy: RebalancePolicy = .init()) -> Bool {
        let cluster = Snapshot(brokers)
        for slot in cluster.ids.indices where cluster.states[slot] == .draining && cluster.loads[slot] > 0 {
            return false
        }
        for region in cluster.regionSlots.values {
            let active = region.filter { cluster.states[$0] == .active }
            guard !active.isEmpty else { continue }
            let total = region.reduce(0) { $0 + cluster.loads[$1] }
            let band = band(total: total, activeBrokers: active.count, policy: policy)
            guard active.allSatisfy({ band.contains(cluster.loads[$0]) }) else { return false }
        }
        return true
    }

    /// The band of balanced client counts for a region holding `total` clients over `activeBrokers`
    /// active brokers: `[ceil(m - t), floor(m + t)]`, never below 0 and always wide enough for an even
    /// split (`floor(m)...ceil(m)`), so a balanced state always exists.
    static func band(total: Int, activeBrokers: Int, policy: RebalancePolicy) -> ClosedRange<Int> {
        let n = max(1, activeBrokers)
        let mean = Double(total) / Double(n)
        let relative = policy.relativeTolerance.isFinite ? max(0, policy.relativeTolerance) : 0
        let tolerance = max(relative * mean, Double(max(0, policy.absoluteTolerance)))
        // A hair of slack so that 0.1 * 100 computed as 9.999999999999998 still allows 110.
        let slack = 1e-9 * max(1, mean)
        var lower = max(0, Int((mean - tolerance - slack).rounded(.up)))
        var upper = Int((mean + tolerance + slack).rounded(.down))
        lower = min(lower, total / n)
        upper = max(upper, (total + n - 1) / n)
        return lower...upper
    }

    // MARK: - Planning one region

    private static func planGroup(
        _ group: Group,
        cluster: Snapshot,
        loads: inout [Int],
        policy: RebalancePolicy,
        moves: inout MoveList
    ) {
        guard !group.active.isEmpty else { return }
        let band = band(total: group.total(loads), activeBrokers: group.active.count, policy: policy)
        let lower = band.lowerBound
        let upper = band.upperBound
        let caps = cluster.capacities
        let isDraining = Set(group.draining + group.inbound.map(\.slot))

        // Excess per sender: everything a draining broker holds (for a broker of a region with no active
        // broker: the share allotted to this region), what an active one holds above `upper`.
        var excess: [Int: Int] = [:]
        for slot in group.draining where loads[slot] > 0 { excess[slot] = loads[slot] }
        for (slot, count) in group.inbound { excess[slot] = count }
        for slot in group.active where loads[slot] > upper { excess[slot] = loads[slot] - upper }
        // Brokers above the band never receive, even those whose excess finds no taker.
        let overloaded = Set(group.active.filter { loads[$0] > upper })
        var received = Set<Int>()

        func move(_ from: Int, _ to: Int, _ count: Int) {
            guard count > 0 else { return }
            loads[from] -= count
            loads[to] += count
            if let left = excess[from] { excess[from] = left - count }
            received.insert(to)
            moves.add(from: cluster.ids[from], to: cluster.ids[to], count: count)
        }
        // Draining brokers first, then the largest excess, then the lowest id.
        func sendersByPriority(drainingOnly: Bool = false) -> [Int] {
            excess.filter { $0.value > 0 && (!drainingOnly || isDraining.contains($0.key)) }.keys.sorted { a, b in
                let (da, db) = (isDraining.contains(a), isDraining.contains(b))
                if da != db { return da }
                let (ea, eb) = (excess[a] ?? 0, excess[b] ?? 0)
                return ea != eb ? ea > eb : a < b
            }
        }
        // Free places below the lower edge that capacity lets a broker take.
        func deficit(_ slot: Int) -> Int { max(0, min(lower, caps[slot]) - loads[slot]) }

        // 1. Largest excess to largest deficit.
        while let sender = sendersByPriority().first,
            let receiver = group.active.filter({ deficit($0) > 0 }).max(by: {
                deficit($0) != deficit($1) ? deficit($0) < deficit($1) : $0 > $1
            })
        {
            move(sender, receiver, min(excess[sender] ?? 0, deficit(receiver)))
        }

        // 2. Excess left: level the receivers' room below `upper`; then draining leftovers up to capacity.
        let byRoomToUpper = group.active.filter { !overloaded.contains($0) }.map { ($0, max(0, min(upper, caps[$0]) - loads[$0])) }
        flow(from: sendersByPriority(), amounts: excess, into: byRoomToUpper, move: move)
        let byRoomToCapacity = group.active.filter { !overloaded.contains($0) }.map { ($0, max(0, caps[$0] - loads[$0])) }
        flow(from: sendersByPriority(drainingOnly: true), amounts: excess, into: byRoomToCapacity, move: move)

        // 3. Deficit left: level the donors' clients above `lower`.
        let needs = group.active.map { ($0, deficit($0)) }.filter { $0.1 > 0 }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        let need = needs.reduce(0) { $0 + $1.1 }
        guard need > 0 else { return }
        let donors = group.active.filter { !received.contains($0) && loads[$0] > lower }
        let gives = levelOff(donors.map { loads[$0] - lower }, taking: need)
        var donorIndex = 0
        var given = gives
        for (receiver, wanted) in needs {
            var wanted = wanted
            while wanted > 0, donorIndex < donors.count {
                let count = min(wanted, given[donorIndex])
                move(donors[donorIndex], receiver, count)
                given[donorIndex] -= count
                wanted -= count
                if given[donorIndex] == 0 { donorIndex += 1 }
            }
        }
    }

    /// Moves as much of the senders' `amounts` (in order) as fits into `receivers` (slot, room),
    /// filling the receivers with the most room first so that what remains is as even as possible.
    private static func flow(
        from senders: [Int],
        amounts: [Int: Int],
        into receivers: [(slot: Int, room: Int)],
        move: (Int, Int, Int) -> Void
    ) {
        let available = senders.reduce(0) { $0 + (amounts[$1] ?? 0) }
        guard available > 0, !receivers.isEmpty else { return }
        let takes = levelOff(receivers.map(\.room), taking: available)
        var remaining = senders.map { amounts[$0] ?? 0 }
        var senderIndex = 0
        for (index, receiver) in receivers.enumerated() {
            var wanted = takes[index]
            while wanted > 0, senderIndex < senders.count {
                let count = min(wanted, remaining[senderIndex])
                move(senders[senderIndex], receiver.slot, count)
                remaining[senderIndex] -= count
                wanted -= count
                if remaining[senderIndex] == 0 { senderIndex += 1 }
            }
        }
    }

    /// How much to take from each of `values` so that the total taken is `min(amount, sum)` and the
    /// largest values are cut first, leaving them as level as possible. Leftover single units go to the
    /// earliest indices (callers order by broker id).
    static func levelOff(_ values: [Int], taking amount: Int) -> [Int] {
        let total = values.reduce(0) { $0 + max(0, $1) }
        guard amount > 0 else { return values.map { _ in 0 } }
        guard amount < total else { return values.map { max(0, $0) } }
        func taken(above level: Int) -> Int { values.reduce(0) { $0 + max(0, $1 - level) } }
        // The lowest level whose cut does not exceed `amount`; exists since cutting at 0 takes `total` > amount.
        var low = 0
        var high = values.max() ?? 0
        while low < high {
            let mid = (low + high) / 2
            if taken(above: mid) <= amount { high = mid } else { low = mid + 1 }
        }
        var takes = values.map { max(0, $0 - low) }
        // Cutting at `low - 1` would take more than `amount`, so enough values sit at or above `low`.
        var rest = amount - takes.reduce(0, +)
        for index in values.indices where rest > 0 && values[index] >= low {
            takes[index] += 1
            rest -= 1
        }
        return takes
    }
}

/// Moves in the order first planned, merging repeats of the same (from, to).
private struct MoveList {
    var moves: [Move] = []
    private var index: [String: [String: Int]] = [:]

    mutating func add(from: String, to: String, count: Int) {
        guard count > 0 else { return }
        if let existing = index[from]?[to] {
            moves[existing].count += count
        } else {
            index[from, default: [:]][to] = moves.count
            moves.append(Move(from: from, to: to, count: count))
        }
    }
}

/// The brokers as parallel arrays indexed by slot (slots in id order, so "lower slot" means "lower id").
private struct Snapshot {
    var ids: [String] = []
    var regions: [String] = []
    var states: [BrokerState] = []
    var loads: [Int] = []
    var capacities: [Int] = []
    var locations: [GeoPoint?] = []
    var regionSlots: [String: [Int]] = [:]

    init(_ brokers: [BrokerRecord]) {
        var seen = Set<String>()
        for record in brokers.sorted(by: { ($0.id, $0.incarnation) < ($1.id, $1.incarnation) })
        where seen.insert(record.id).inserted {
            regionSlots[record.region, default: []].append(ids.count)
            ids.append(record.id)
            regions.append(record.region)
            states.append(record.state)
            loads.append(max(0, record.load.connections))
            capacities.append(max(0, record.capacity))
            locations.append(record.location)
        }
    }

    /// Located brokers of `region`, in any state: where the region is.
    func locations(of region: String) -> [GeoPoint] {
        (regionSlots[region] ?? []).compactMap { locations[$0] }
    }
}

/// The brokers planned together: one region's active and draining brokers, plus shares of draining
/// brokers from regions with no active broker that fail over to this region.
private struct Group {
    var region: String
    var active: [Int]
    /// This region's draining brokers that hold clients.
    var draining: [Int]
    /// Draining brokers of other regions, with how many of their clients this region takes.
    var inbound: [(slot: Int, count: Int)] = []

    /// Clients the region's active brokers hold once the plan is carried out.
    func total(_ loads: [Int]) -> Int {
        (active + draining).reduce(0) { $0 + loads[$1] } + inbound.reduce(0) { $0 + $1.count }
    }
}

extension Rebalancer {
    /// Groups in region-name order. Clients of draining brokers in a region with no active broker are
    /// shared out over the other regions, nearest first (by distance from the draining broker's location,
    /// else from its region's located brokers; then most spare capacity; then name), each region taking
    /// what its plan can place without overfilling anyone.
    fileprivate static func groups(_ cluster: Snapshot, policy: RebalancePolicy) -> [Group] {
        var groups: [String: Group] = [:]
        var orphans: [Int] = []
        for (region, slots) in cluster.regionSlots {
            let active = slots.filter { cluster.states[$0] == .active }
            let draining = slots.filter { cluster.states[$0] == .draining && cluster.loads[$0] > 0 }
            if active.isEmpty {
                orphans += draining
            } else {
                groups[region] = Group(region: region, active: active, draining: draining)
            }
        }
        for slot in orphans.sorted() {
            var need = cluster.loads[slot]
            for region in regionsNearest(to: slot, cluster: cluster, among: groups) where need > 0 {
                guard var group = groups[region] else { continue }
                let taken = absorbable(group, need: need, cluster: cluster, policy: policy)
                if taken > 0 {
                    group.inbound.append((slot, taken))
                    groups[region] = group
                    need -= taken
                }
            }
        }
        return groups.keys.sorted().compactMap { groups[$0] }
    }

    /// How many more draining clients (up to `need`) the group's plan can place. Draining clients can go
    /// to every active broker not above the band's upper edge, up to its capacity; taking more clients
    /// raises the band (never lowers it), which can only add room, so grow the amount until it settles.
    private static func absorbable(_ group: Group, need: Int, cluster: Snapshot, policy: RebalancePolicy) -> Int {
        let committed = group.draining.reduce(0) { $0 + cluster.loads[$1] } + group.inbound.reduce(0) { $0 + $1.count }
        let base = group.total(cluster.loads)
        func room(adding extra: Int) -> Int {
            let upper = band(total: base + extra, activeBrokers: group.active.count, policy: policy).upperBound
            return group.active.filter { cluster.loads[$0] <= upper }.reduce(0) {
                $0 + max(0, cluster.capacities[$1] - cluster.loads[$1])
            }
        }
        var taken = 0
        while true {
            let next = min(need, max(0, room(adding: taken) - committed))
            if next <= taken { return taken }
            taken = next
        }
    }

    /// Regions with an active broker, nearest to the draining broker `slot` first.
    private static func regionsNearest(to slot: Int, cluster: Snapshot, among groups: [String: Group]) -> [String] {
        let reference: [GeoPoint] = cluster.locations[slot].map { [$0] } ?? cluster.locations(of: cluster.regions[slot])
        let ranked = groups.map { region, group in
            let spare = group.active.reduce(0) { $0 + max(0, cluster.capacities[$1] - cluster.loads[$1]) }
            var distance = Double.infinity
            for point in reference {
                if let d = GeoPoint.nearestDistanceKm(from: point, to: cluster.locations(of: region)) { distance = min(distance, d) }
            }
            return (region: region, distance: distance, spare: spare)
        }
        return ranked.sorted { a, b in
            if a.distance != b.distance { return a.distance < b.distance }
            if a.spare != b.spare { return a.spare > b.spare }
            return a.region < b.region
        }.map(\.region)
    }
}
