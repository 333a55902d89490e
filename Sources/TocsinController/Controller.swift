public import Logging
import Metrics
public import ServiceLifecycle
import Synchronization
public import TocsinCore
public import TocsinHTTP

/// Everything the controller needs to know, with defaults for one host.
public struct ControllerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port; read it back from `onListening`.
    public var port = 7300
    /// Deadlines and size limits of every HTTP request.
    public var http = HTTPEdgeLimits()
    /// The controller's own URL in the discovery list (`http://host:port` when unset and the
    /// host is a concrete address; a wildcard bind address needs it said explicitly).
    public var advertisedURL: String?
    /// A broker that has not renewed its lease for this long is dead.
    public var leaseDuration: Duration = .seconds(3)
    /// How often brokers renew (told to them in every lease reply).
    public var heartbeatInterval: Duration = .milliseconds(500)
    /// How often the controller checks leases and balance.
    public var tickInterval: Duration = .milliseconds(250)
    /// After ordering migrations, wait this long (for them to happen and be reported) before
    /// planning again. A draining broker is planned for at once.
    public var rebalanceCooldown: Duration = .seconds(3)
    public var rebalance = RebalancePolicy()
    public var placement = PlacementPolicy()
    /// Turns the rebalancer off (assignment, failover and drain still work).
    public var rebalanceEnabled = true

    public init() {}
}

/// The Broker Controller Service: broker registration and leases, the discovery list, client
/// assignment, and rebalancing by live migration. Every decision is a pure function from the
/// core module (`Membership`, `Placement`, `Rebalancer`); this class gathers the snapshot, calls
/// them under one lock, and hands migrate orders to brokers in their next heartbeat reply.
///
/// Its state is soft: brokers re-register when a restarted controller answers `unknown_broker`,
/// so the registry is whole again within one heartbeat.
public final class Controller: Service, Sendable {
    public let configuration: ControllerConfiguration
    let logger: Logger
    /// The controller's clock; tests pass a manual one.
    let now: @Sendable () -> ClusterTime
    private let state: Mutex<State>
    /// The URL the controller advertises, set once it listens.
    let advertisedURL = Mutex<String?>(nil)
    private let assignments = Atomic<Int>(0)
    private let metrics = ControllerMetrics()

    /// How many `assign` questions the controller has answered (or refused) since it started.
    public var assignmentCount: Int { assignments.load(ordering: .relaxed) }

    private struct State {
        var membership: Membership
        var placement: Placement
        /// Orders waiting for their broker's next heartbeat, by broker id.
        var orders: [String: [MigrateCommand]] = [:]
        var lastPlanAt: ClusterTime?
        /// A draining broker asks for its clients to be moved now, not after the cooldown.
        var drainRequested = false
        /// Total clients of the network at each tick over the last two cooldowns.
        var totals: [(at: ClusterTime, clients: Int)] = []

        mutating func rebuildPlacement(_ policy: PlacementPolicy) {
            let previous = placement
            placement = Placement(brokers: membership.live, policy: policy)
            placement.carryReservations(from: previous)
        }
    }

    public init(configuration: ControllerConfiguration, logger: Logger, now: (@Sendable () -> ClusterTime)? = nil) {
        self.configuration = configuration
        self.logger = logger
        if let now {
            self.now = now
        } else {
            let origin = ContinuousClock.now
            self.now = { ContinuousClock.now - origin }
        }
        let membership = Membership(leaseDuration: configuration.leaseDuration)
        state = Mutex(State(membership: membership, placement: Placement(brokers: [], policy: configuration.placement)))
        advertisedURL.withLock { $0 = configuration.advertisedURL }
    }

    // MARK: Broker API

    public func register(_ request: RegistrationRequest) throws(TocsinError) -> LeaseReply {
        let at = now()
        let (record, replaced) = try state.withLock { s throws(TocsinError) in
            let result = try s.membership.register(request, now: at)
            if let replaced = result.replaced { s.orders[replaced.id] = nil }
            s.rebuildPlacement(configuration.placement)
            return result
        }
        if let replaced, replaced.incarnation != record.incarnation {
            logger.notice(
                "broker restarted: new incarnation replaces the old one",
                metadata: ["broker": "\(record.id)", "old": "\(replaced.incarnation)", "new": "\(record.incarnation)"])
        } else if replaced == nil {
            logger.info(
                "broker registered",
                metadata: ["broker": "\(record.id)", "ws": "\(record.webSocketURL)", "region": "\(record.region)", "capacity": "\(record.capacity)"])
        }
        return leaseReply(commands: [])
    }

    public func heartbeat(id: String, incarnation: String, load: BrokerLoad) throws(TocsinError) -> LeaseReply {
        let at = now()
        let commands = try state.withLock { s throws(TocsinError) -> [MigrateCommand] in
            _ = try s.membership.heartbeat(id: id, incarnation: incarnation, load: load, now: at)
            s.placement.updateLoad(of: id, connections: load.connections)
            // An order whose target died or started draining since it was planned would strand
            // its clients: drop it (the next plan sees the new situation).
            let orders = s.orders.removeValue(forKey: id) ?? []
            return orders.filter { order in
                s.membership.brokers[order.to.id].map { $0.incarnation == order.to.incarnation && $0.state == .active } ?? false
            }
        }
        for c in commands {
            logger.info("ordered migration", metadata: ["from": "\(id)", "to": "\(c.to.id)", "clients": "\(c.count)", "reason": "\(c.reason)"])
        }
        return leaseReply(commands: commands)
    }

    /// The broker takes no new clients; its clients are moved to the others.
    public func drain(id: String, incarnation: String) throws(TocsinError) -> LeaseReply {
        let at = now()
        try state.withLock { s throws(TocsinError) in
            _ = try s.membership.drain(id: id, incarnation: incarnation, now: at)
            s.rebuildPlacement(configuration.placement)
            s.drainRequested = true
        }
        logger.notice("broker draining", metadata: ["broker": "\(id)"])
        tick()
        return leaseReply(commands: [])
    }

    public func deregister(id: String, incarnation: String) throws(TocsinError) {
        try state.withLock { s throws(TocsinError) in
            _ = try s.membership.deregister(id: id, incarnation: incarnation)
            s.orders[id] = nil
            s.rebuildPlacement(configuration.placement)
        }
        logger.notice("broker deregistered", metadata: ["broker": "\(id)"])
    }

    // MARK: Client API

    public var cluster: ClusterView {
        let brokers = state.withLock { $0.membership.live }
        return ClusterView(controller: advertisedURL.withLock { $0 }, brokers: brokers.map(BrokerSummary.init))
    }

    public func assign(_ request: AssignmentRequest) throws(TocsinError) -> AssignReply {
        assignments.add(1, ordering: .relaxed)
        metrics.assignments.increment()
        let at = now()
        let assignment = try state.withLock { s throws(TocsinError) -> Assignment in
            try s.placement.reserve(request, now: at)
        }
        return AssignReply(assignment)
    }

    private func leaseReply(commands: [MigrateCommand]) -> LeaseReply {
        LeaseReply(
            leaseMillis: configuration.leaseDuration.milliseconds, heartbeatMillis: configuration.heartbeatInterval.milliseconds,
            commands: commands, cluster: cluster)
    }

    // MARK: Leases and balance

    /// Expires leases, and when the cooldown allows, plans a rebalance and queues its orders.
    public func tick() {
        let at = now()
        let (expired, plan) = state.withLock { s -> ([BrokerRecord], RebalancePlan?) in
            let expired = s.membership.expire(now: at)
            if !expired.isEmpty {
                for b in expired { s.orders[b.id] = nil }
                s.rebuildPlacement(configuration.placement)
            }
            let live = s.membership.live
            metrics.record(live: live)
            // With rebalancing off, only draining brokers are emptied.
            guard configuration.rebalanceEnabled || live.contains(where: { $0.state == .draining }) else { return (expired, nil) }
            // While clients arrive or leave in numbers (a connect storm, a failover) the reports lag
            // behind and bounded-load assignment is still evening things out: moving clients on
            // that snapshot would be wasted. Plan only once the total has settled (moved less than
            // the tolerance over one cooldown), unless a broker is draining.
            let clients = live.reduce(0) { $0 + $1.load.connections + $1.load.migrating }
            s.totals.append((at, clients))
            s.totals.removeAll { $0.at < at - configuration.rebalanceCooldown * 2 }
            let active = max(1, live.filter { $0.state == .active }.count)
            let tolerance = max(
                Double(configuration.rebalance.absoluteTolerance), configuration.rebalance.relativeTolerance * Double(clients) / Double(active))
            let settled = s.totals.last { $0.at <= at - configuration.rebalanceCooldown }.map { Double(abs(clients - $0.clients)) <= tolerance }
            guard settled == true || s.drainRequested else { return (expired, nil) }
            let coolingDown = s.lastPlanAt.map { at - $0 < configuration.rebalanceCooldown } ?? false
            guard !coolingDown || s.drainRequested else { return (expired, nil) }
            // Clients still in flight from the last orders: nobody's report shows where they land yet.
            guard !live.contains(where: { $0.load.migrating > 0 }) else { return (expired, nil) }
            var plan = Rebalancer.plan(brokers: live, policy: configuration.rebalance)
            if !configuration.rebalanceEnabled {
                let draining = Set(live.filter { $0.state == .draining }.map(\.id))
                plan.moves.removeAll { !draining.contains($0.from) }
            }
            s.drainRequested = false
            guard !plan.isEmpty else { return (expired, nil) }
            let byID = Dictionary(uniqueKeysWithValues: live.map { ($0.id, $0) })
            for move in plan.moves {
                guard let from = byID[move.from], let to = byID[move.to] else { continue }
                let reason = from.state == .draining ? "drain" : "rebalance"
                s.orders[move.from, default: []].append(MigrateCommand(count: move.count, to: BrokerSummary(to), reason: reason))
            }
            s.lastPlanAt = at
            return (expired, plan)
        }
        for b in expired {
            logger.warning("broker lease expired: treating it as dead", metadata: ["broker": "\(b.id)", "incarnation": "\(b.incarnation)"])
        }
        metrics.leaseExpiries.increment(by: Int64(expired.count))
        if let plan {
            metrics.migrationsOrdered.increment(by: Int64(plan.moves.reduce(0) { $0 + $1.count }))
            let moves = plan.moves.map { "\($0.from)→\($0.to) \($0.count)" }.joined(separator: ", ")
            logger.notice("rebalance planned", metadata: ["clients": "\(plan.totalClients)", "moves": "\(moves)"])
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: self.configuration.tickInterval)
                self.tick()
            }
        }
        logger.info("controller stopped")
    }
}

/// The controller's metrics, with stable names (swift-metrics; `tocsin controller` exports them
/// at `GET /metrics`).
struct ControllerMetrics: Sendable {
    let assignments = Counter(label: "tocsin_controller_assignments_total")
    let leaseExpiries = Counter(label: "tocsin_controller_lease_expiries_total")
    /// Clients the controller ordered brokers to move (rebalance and drain).
    let migrationsOrdered = Counter(label: "tocsin_controller_migrations_ordered_total")
    let activeBrokers = Gauge(label: "tocsin_controller_brokers", dimensions: [("state", "active")])
    let drainingBrokers = Gauge(label: "tocsin_controller_brokers", dimensions: [("state", "draining")])
    let clients = Gauge(label: "tocsin_controller_clients")

    /// The live brokers as of a tick, and the clients they last reported.
    func record(live: [BrokerRecord]) {
        activeBrokers.record(live.filter { $0.state == .active }.count)
        drainingBrokers.record(live.filter { $0.state == .draining }.count)
        clients.record(live.reduce(0) { $0 + $1.load.connections })
    }
}
