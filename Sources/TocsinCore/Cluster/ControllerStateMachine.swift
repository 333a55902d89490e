/// The controller's policy as a value: who is registered (`Membership`), where clients go
/// (`Placement`), which migrate orders wait for their broker's next heartbeat, and when the next
/// rebalance may be planned. Every method takes the time and returns what happened as plain
/// values (`Fact`s, orders); the `Controller` holds it in a `Mutex`, calls it under the lock, and
/// logs, counts and answers after releasing the lock.
///
/// Planning rules (`tick(now:)`):
/// - leases that ran out are expired: the broker is dead, its pending orders are dropped;
/// - a rebalance is planned only once the network's total of clients has settled (moved less
///   than the tolerance over one cooldown), at most once per cooldown, and never while clients
///   are still in flight from earlier orders (`BrokerLoad.migrating`);
/// - a drain skips the settling and the cooldown: it is planned at the next tick (`drain` runs one);
/// - with rebalancing off, only draining brokers are emptied.
///
/// Orders are handed out once, in the heartbeat of the broker they are for; an order whose
/// target has died or started draining since it was planned is dropped (the next plan sees the
/// new situation).
public struct ControllerStateMachine: Sendable {
    /// The tuning of the controller's decisions (the process's `ControllerConfiguration` fills it).
    public struct Configuration: Sendable, Hashable {
        /// A broker that has not renewed its lease for this long is dead.
        public var leaseDuration: Duration
        /// After ordering migrations, wait this long before planning again.
        public var rebalanceCooldown: Duration
        public var rebalance: RebalancePolicy
        public var placement: PlacementPolicy
        /// Off: only draining brokers are emptied.
        public var rebalanceEnabled: Bool

        public init(
            leaseDuration: Duration = .seconds(3), rebalanceCooldown: Duration = .seconds(3), rebalance: RebalancePolicy = .init(),
            placement: PlacementPolicy = .init(), rebalanceEnabled: Bool = true
        ) {
            self.leaseDuration = leaseDuration
            self.rebalanceCooldown = rebalanceCooldown
            self.rebalance = rebalance
            self.placement = placement
            self.rebalanceEnabled = rebalanceEnabled
        }
    }

    /// Something that happened, for the owner to log and count.
    public enum Fact: Sendable, Hashable {
        /// A broker registered (or repeated its registration).
        case registered(BrokerRecord)
        /// A broker restarted: its new incarnation replaced the old one, which is dead.
        case restarted(BrokerRecord, replacing: BrokerRecord)
        case draining(id: String)
        /// A drained broker takes clients again (an `undrain` command).
        case undrained(id: String)
        case deregistered(id: String)
        /// The broker's lease ran out: it is dead and its clients fail over.
        case expired(BrokerRecord)
        /// The live brokers at a tick (for the gauges).
        case counted(active: Int, draining: Int, clients: Int)
        /// Migrate orders were queued for these moves.
        case planned(RebalancePlan)
    }

    public private(set) var configuration: Configuration
    public private(set) var membership: Membership
    /// Where clients go. Rebuilt from the membership before the next assignment after brokers
    /// changed (`placementStale`), not at each change: a thousand brokers registering at once
    /// (after a controller restart) rebuilt the ring a thousand times, 4 ms each, and held up
    /// their heartbeats until their leases ran out.
    private var placement: Placement
    private var placementStale = false
    /// Orders waiting for their broker's next heartbeat, by broker id.
    public private(set) var orders: [String: [MigrateCommand]] = [:]
    /// When orders were last planned.
    public private(set) var lastPlanAt: ClusterTime?
    /// A draining broker asks for its clients to be moved now, not after the cooldown.
    public private(set) var drainRequested = false
    /// Total clients of the network at each tick over the last two cooldowns.
    private var totals: [(at: ClusterTime, clients: Int)] = []

    public init(configuration: Configuration) {
        self.configuration = configuration
        membership = Membership(leaseDuration: configuration.leaseDuration)
        placement = Placement(brokers: [], policy: configuration.placement)
    }

    /// The brokers held, sorted by id.
    public var live: [BrokerRecord] { membership.live }

    // MARK: Brokers

    /// Registers a broker (`Membership.register`); a replaced incarnation's orders are dropped.
    public mutating func register(_ request: RegistrationRequest, now: ClusterTime) throws(TocsinError) -> [Fact] {
        let (record, replaced) = try membership.register(request, now: now)
        if let replaced { orders[replaced.id] = nil }
        rebuildPlacement()
        if let replaced, replaced.incarnation != record.incarnation { return [.restarted(record, replacing: replaced)] }
        return replaced == nil ? [.registered(record)] : []
    }

    /// Renews the lease, records the load, and returns the orders waiting for this broker (each
    /// is handed out once), less those whose target is gone or draining.
    public mutating func heartbeat(id: String, incarnation: String, load: BrokerLoad, now: ClusterTime) throws(TocsinError)
        -> [MigrateCommand]
    {
        _ = try membership.heartbeat(id: id, incarnation: incarnation, load: load, now: now)
        // A stale placement is rebuilt from the membership, which has this load already.
        if !placementStale { placement.updateLoad(of: id, connections: load.connections) }
        let waiting = orders.removeValue(forKey: id) ?? []
        return waiting.filter { order in
            membership.brokers[order.to.id].map { $0.incarnation == order.to.incarnation && $0.state == .active } ?? false
        }
    }

    /// Marks the broker draining (it takes no new client) and plans at once (`tick`), so its
    /// orders are waiting for its next heartbeat.
    public mutating func drain(id: String, incarnation: String, now: ClusterTime) throws(TocsinError) -> [Fact] {
        _ = try membership.drain(id: id, incarnation: incarnation, now: now)
        rebuildPlacement()
        drainRequested = true
        return [.draining(id: id)] + tick(now: now)
    }

    /// Live configuration: new rebalancing tolerances and on/off, used from the next tick.
    public mutating func retune(rebalance: RebalancePolicy, enabled: Bool) {
        configuration.rebalance = rebalance
        configuration.rebalanceEnabled = enabled
    }

    /// A broker that asks to be draining (its heartbeat's `draining`, after a `drain` command
    /// or at graceful shutdown) is drained if it is active; nothing otherwise.
    public mutating func drainIfActive(id: String, incarnation: String, now: ClusterTime) throws(TocsinError) -> [Fact] {
        guard membership.brokers[id]?.state == .active else { return [] }
        return try drain(id: id, incarnation: incarnation, now: now)
    }

    /// A draining broker takes clients again (it carried out an `undrain` command). Nothing when
    /// it is active or not held.
    public mutating func undrain(id: String, incarnation: String, now: ClusterTime) throws(TocsinError) -> [Fact] {
        guard membership.brokers[id]?.state == .draining else { return [] }
        _ = try membership.undrain(id: id, incarnation: incarnation, now: now)
        rebuildPlacement()
        return [.undrained(id: id)]
    }

    /// Removes the broker (a clean shutdown) and its pending orders.
    public mutating func deregister(id: String, incarnation: String) throws(TocsinError) -> [Fact] {
        _ = try membership.deregister(id: id, incarnation: incarnation)
        orders[id] = nil
        rebuildPlacement()
        return [.deregistered(id: id)]
    }

    /// Takes over the registry the leader wrote to the store: a follower does it every tick (to
    /// answer `assign` and the discovery list), a new leader once when it takes over. Every
    /// broker in it gets a fresh lease from `now` (it must heartbeat within the lease or it
    /// expires); orders waiting are dropped, and no rebalance is planned before the network's
    /// total has settled for a cooldown (a drain goes on at once). Sticky assignments are kept.
    public mutating func adopt(_ brokers: [BrokerSummary], now: ClusterTime) {
        membership.adopt(
            brokers.map {
                BrokerRecord(
                    id: $0.id, incarnation: $0.incarnation, webSocketURL: $0.webSocketURL, httpURL: $0.httpURL, region: $0.region,
                    location: $0.location, capacity: $0.capacity, state: $0.state, load: $0.load, registeredAt: now)
            }, now: now)
        orders = [:]
        totals = []
        // A drain in progress goes on at once.
        drainRequested = brokers.contains { $0.state == .draining }
        rebuildPlacement()
    }

    // MARK: Clients

    /// The broker a client should use (`Placement.reserve`).
    public mutating func assign(_ request: AssignmentRequest, now: ClusterTime) throws(TocsinError) -> Assignment {
        if placementStale {
            let previous = placement
            placement = Placement(brokers: membership.live, policy: configuration.placement)
            placement.carryReservations(from: previous)
            placementStale = false
        }
        return try placement.reserve(request, now: now)
    }

    // MARK: Leases and balance

    /// Expires leases, and when the rules in the type's documentation allow, plans a rebalance
    /// and queues its orders.
    public mutating func tick(now: ClusterTime) -> [Fact] {
        var facts: [Fact] = []
        let expired = membership.expire(now: now)
        if !expired.isEmpty {
            for b in expired { orders[b.id] = nil }
            rebuildPlacement()
        }
        facts += expired.map(Fact.expired)
        let live = membership.live
        facts.append(
            .counted(
                active: live.filter { $0.state == .active }.count, draining: live.filter { $0.state == .draining }.count,
                clients: live.reduce(0) { $0 + $1.load.connections }))
        if let plan = plan(live: live, now: now) { facts.append(.planned(plan)) }
        return facts
    }

    private mutating func plan(live: [BrokerRecord], now: ClusterTime) -> RebalancePlan? {
        let cooldown = configuration.rebalanceCooldown
        guard configuration.rebalanceEnabled || live.contains(where: { $0.state == .draining }) else { return nil }
        // While clients arrive or leave in numbers (a connect storm, a failover) the reports lag
        // behind and bounded-load assignment is still evening things out: moving clients on
        // that snapshot would be wasted. Plan only once the total has settled, unless a broker is draining.
        let clients = live.reduce(0) { $0 + $1.load.connections + $1.load.migrating }
        totals.append((now, clients))
        totals.removeAll { $0.at < now - cooldown * 2 }
        let active = max(1, live.filter { $0.state == .active }.count)
        let tolerance = max(
            Double(configuration.rebalance.absoluteTolerance), configuration.rebalance.relativeTolerance * Double(clients) / Double(active))
        let settled = totals.last { $0.at <= now - cooldown }.map { Double(abs(clients - $0.clients)) <= tolerance }
        guard settled == true || drainRequested else { return nil }
        let coolingDown = lastPlanAt.map { now - $0 < cooldown } ?? false
        guard !coolingDown || drainRequested else { return nil }
        // Clients still in flight from the last orders: nobody's report shows where they land yet.
        guard !live.contains(where: { $0.load.migrating > 0 }) else { return nil }
        var plan = Rebalancer.plan(brokers: live, policy: configuration.rebalance)
        if !configuration.rebalanceEnabled {
            let draining = Set(live.filter { $0.state == .draining }.map(\.id))
            plan.moves.removeAll { !draining.contains($0.from) }
        }
        drainRequested = false
        guard !plan.isEmpty else { return nil }
        let byID = Dictionary(uniqueKeysWithValues: live.map { ($0.id, $0) })
        for move in plan.moves {
            guard let from = byID[move.from], let to = byID[move.to] else { continue }
            let reason = from.state == .draining ? "drain" : "rebalance"
            orders[move.from, default: []].append(MigrateCommand(count: move.count, to: BrokerSummary(to), reason: reason))
        }
        lastPlanAt = now
        return plan
    }

    /// Brokers changed: the placement is rebuilt before the next assignment.
    private mutating func rebuildPlacement() {
        placementStale = true
    }
}
