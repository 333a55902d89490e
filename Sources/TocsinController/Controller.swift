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
/// assignment, and rebalancing by live migration. Every decision is made by the core's
/// `ControllerStateMachine` (over `Membership`, `Placement` and `Rebalancer`); this class holds it
/// under one lock, reads the clock, and logs and counts what it reports after releasing the lock.
/// Migrate orders reach brokers in their next heartbeat reply.
///
/// Its state is soft: brokers re-register when a restarted controller answers `unknown_broker`,
/// so the registry is whole again within one heartbeat.
public final class Controller: Service, Sendable {
    public let configuration: ControllerConfiguration
    let logger: Logger
    /// The controller's clock; tests pass a manual one.
    let now: @Sendable () -> ClusterTime
    private let machine: Mutex<ControllerStateMachine>
    /// The URL the controller advertises, set once it listens.
    let advertisedURL = Mutex<String?>(nil)
    private let assignments = Atomic<Int>(0)
    private let metrics = ControllerMetrics()

    /// How many `assign` questions the controller has answered (or refused) since it started.
    public var assignmentCount: Int { assignments.load(ordering: .relaxed) }

    public init(configuration: ControllerConfiguration, logger: Logger, now: (@Sendable () -> ClusterTime)? = nil) {
        self.configuration = configuration
        self.logger = logger
        if let now {
            self.now = now
        } else {
            let origin = ContinuousClock.now
            self.now = { ContinuousClock.now - origin }
        }
        machine = Mutex(
            ControllerStateMachine(
                configuration: .init(
                    leaseDuration: configuration.leaseDuration, rebalanceCooldown: configuration.rebalanceCooldown,
                    rebalance: configuration.rebalance, placement: configuration.placement,
                    rebalanceEnabled: configuration.rebalanceEnabled)))
        advertisedURL.withLock { $0 = configuration.advertisedURL }
    }

    // MARK: Broker API

    public func register(_ request: RegistrationRequest) throws(TocsinError) -> LeaseReply {
        let at = now()
        let facts = try machine.withLock { m throws(TocsinError) in try m.register(request, now: at) }
        report(facts)
        return leaseReply(commands: [])
    }

    public func heartbeat(id: String, incarnation: String, load: BrokerLoad) throws(TocsinError) -> LeaseReply {
        let at = now()
        let commands = try machine.withLock { m throws(TocsinError) in
            try m.heartbeat(id: id, incarnation: incarnation, load: load, now: at)
        }
        for c in commands {
            logger.info("ordered migration", metadata: ["from": "\(id)", "to": "\(c.to.id)", "clients": "\(c.count)", "reason": "\(c.reason)"])
        }
        return leaseReply(commands: commands)
    }

    /// The broker takes no new clients; its clients are moved to the others.
    public func drain(id: String, incarnation: String) throws(TocsinError) -> LeaseReply {
        let at = now()
        let facts = try machine.withLock { m throws(TocsinError) in try m.drain(id: id, incarnation: incarnation, now: at) }
        report(facts)
        return leaseReply(commands: [])
    }

    public func deregister(id: String, incarnation: String) throws(TocsinError) {
        let facts = try machine.withLock { m throws(TocsinError) in try m.deregister(id: id, incarnation: incarnation) }
        report(facts)
    }

    // MARK: Client API

    public var cluster: ClusterView {
        let brokers = machine.withLock { $0.live }
        return ClusterView(controller: advertisedURL.withLock { $0 }, brokers: brokers.map(BrokerSummary.init))
    }

    public func assign(_ request: AssignmentRequest) throws(TocsinError) -> AssignReply {
        assignments.add(1, ordering: .relaxed)
        metrics.assignments.increment()
        let at = now()
        let assignment = try machine.withLock { m throws(TocsinError) -> Assignment in try m.assign(request, now: at) }
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
        report(machine.withLock { $0.tick(now: at) })
    }

    /// Logs and counts what the state machine did (outside its lock).
    private func report(_ facts: [ControllerStateMachine.Fact]) {
        for fact in facts {
            switch fact {
            case .registered(let record):
                logger.info(
                    "broker registered",
                    metadata: [
                        "broker": "\(record.id)", "ws": "\(record.webSocketURL)", "region": "\(record.region)", "capacity": "\(record.capacity)",
                    ])
            case .restarted(let record, let replaced):
                logger.notice(
                    "broker restarted: new incarnation replaces the old one",
                    metadata: ["broker": "\(record.id)", "old": "\(replaced.incarnation)", "new": "\(record.incarnation)"])
            case .draining(let id):
                logger.notice("broker draining", metadata: ["broker": "\(id)"])
            case .deregistered(let id):
                logger.notice("broker deregistered", metadata: ["broker": "\(id)"])
            case .expired(let b):
                logger.warning("broker lease expired: treating it as dead", metadata: ["broker": "\(b.id)", "incarnation": "\(b.incarnation)"])
                metrics.leaseExpiries.increment()
            case .counted(let active, let draining, let clients):
                metrics.record(active: active, draining: draining, clients: clients)
            case .planned(let plan):
                metrics.migrationsOrdered.increment(by: Int64(plan.totalClients))
                let moves = plan.moves.map { "\($0.from)→\($0.to) \($0.count)" }.joined(separator: ", ")
                logger.notice("rebalance planned", metadata: ["clients": "\(plan.totalClients)", "moves": "\(moves)"])
            }
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
    func record(active: Int, draining: Int, clients count: Int) {
        activeBrokers.record(active)
        drainingBrokers.record(draining)
        clients.record(count)
    }
}
