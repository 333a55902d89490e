import Foundation
public import Logging
import Metrics
public import ServiceLifecycle
import Synchronization
public import TocsinCore
public import TocsinHTTP
public import TocsinStore

/// Everything the controller needs to know, with defaults for one host.
public struct ControllerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port; read it back from `onListening`.
    public var port = 7300
    /// Deadlines and size limits of every HTTP request.
    public var http = HTTPEdgeLimits()
    /// Who may call: brokers with the cluster credential, clients with `discovery` (docs/security.md).
    public var authentication: Authentication = .disabled
    /// Origins whose browser pages may read the discovery API (CORS); `*` is any.
    public var allowedOrigins: [String] = []
    /// The controller's own cluster credential, sent in every answer to a broker
    /// (`Tocsin-Cluster-Credential`) so brokers know the orders in it are the network's.
    public var credential: TokenSource?
    /// Serve HTTPS with this certificate (reloaded by whoever holds it); nil: plain HTTP. The
    /// controller then advertises an `https://` URL.
    public var tls: TLSCertificateSource? = nil
    /// The controller's own URL in the discovery list (`http://host:port`, or `https://` with `tls`, when unset and the
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
    /// With a ledger (several controllers on one database): how long the leadership lease lasts
    /// on the database's clock. A follower leads at most this long (plus a tick) after the
    /// leader's last renewal.
    public var leaderLease: Duration = .seconds(2)
    /// The leader stops acting this much before its lease could run out in the database.
    public var leaderMargin: Duration = .milliseconds(500)
    /// The process's log level, which `log.level` and the `log-level` command change; nil
    /// (embedded in a test): those change nothing here.
    public var logLevel: LogLevelControl? = nil

    public init() {}
}

/// The Broker Controller Service: broker registration and leases, the discovery list, client
/// assignment, and rebalancing by live migration. Every decision is made by the core's
/// `ControllerStateMachine` (over `Membership`, `Placement` and `Rebalancer`); this class holds it
/// under one lock, reads the clock, and logs and counts what it reports after releasing the lock.
/// Migrate orders reach brokers in their next heartbeat reply.
///
/// Alone (no ledger) its state is soft: brokers re-register when a restarted controller answers
/// `unknown_broker`, so the registry is whole again within one heartbeat.
///
/// With a `ControllerLedger` (`--store postgres://…`) several controllers share one database and
/// one leads (`Controller+Leadership.swift`): every tick each claims the lease row; the leader
/// serves the broker API, expires leases, plans, and writes the registry; followers answer
/// `not_leader` to brokers and serve the discovery list and `assign` from the registry.
public final class Controller: Service, Sendable {
    public let configuration: ControllerConfiguration
    let logger: Logger
    /// The controller's clock; tests pass a manual one.
    let now: @Sendable () -> ClusterTime
    let machine: Mutex<ControllerStateMachine>
    /// Shared with the other controllers, when several run; nil when this one runs alone.
    let ledger: (any ControllerLedger)?
    /// Who leads, as this controller knows it (only with a ledger).
    let election: Mutex<LeaderElection>
    /// This process in the lease row: unique per start, so a restarted controller is a new holder.
    let holder = "controller-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
    /// Ticks in a row that could not reach the ledger (logged on the first and every 20th).
    let ledgerFailures = Atomic<Int>(0)
    /// The URL the controller advertises, set once it listens.
    let advertisedURL = Mutex<String?>(nil)
    /// Brokers joined, left or changed state (`report`): the heartbeat view's version moves.
    let membershipChanges = Atomic<Int64>(0)
    /// The discovery list heartbeat replies carry (`Controller+HeartbeatView.swift`).
    let viewCache = Mutex(HeartbeatView.start())
    private let assignments = Atomic<Int>(0)
    let metrics = ControllerMetrics()
    /// Live configuration and commands (`Controller+Operations.swift`).
    let control = Mutex(ControlPlane())
    /// The configuration version this controller runs (-1 before the first is applied).
    let appliedConfigVersion = Atomic<Int64>(-1)
    /// The plane's revision last written to the ledger (or read from it).
    let savedControlRevision = Atomic<Int64>(0)
    /// Results of this controller's own commands, reported at the next tick.
    let ownResults = Mutex<[CommandResult]>([])
    /// Wall-clock milliseconds since the epoch (command deadlines, change times); tests pass their own.
    let wallMillis: @Sendable () -> Int64
    let startedAtMillis: Int64
    /// When this controller last refreshed its registration in the ledger.
    let lastRefresh = Mutex<ClusterTime?>(nil)
    /// What the dashboard draws (`Controller+Dashboard.swift`).
    let timeline = Mutex(NetworkTimeline())
    let lastSampleMillis = Mutex<Int64>(0)
    /// The last dashboard document and when it was built (`dashboard()`).
    let dashboardCache = Mutex<(atMillis: Int64, document: JSONValue)?>(nil)
    /// Set when the controller stops: long-lived responses (the dashboard's event stream) end.
    let stopping = Atomic<Bool>(false)
    /// Dashboard event streams open now (at most `maxDashboardStreams`).
    let dashboardStreams = Atomic<Int>(0)
    static let maxDashboardStreams = 64

    /// How many `assign` questions the controller has answered (or refused) since it started.
    public var assignmentCount: Int { assignments.load(ordering: .relaxed) }

    public init(
        configuration: ControllerConfiguration, logger: Logger, now: (@Sendable () -> ClusterTime)? = nil, ledger: (any ControllerLedger)? = nil,
        wallMillis: (@Sendable () -> Int64)? = nil
    ) {
        self.configuration = configuration
        let wall = wallMillis ?? { Int64(Date().timeIntervalSince1970 * 1000) }
        self.wallMillis = wall
        startedAtMillis = wall()
        self.logger = logger
        self.ledger = ledger
        election = Mutex(LeaderElection(lease: configuration.leaderLease, margin: configuration.leaderMargin))
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

    // Only the leader takes these (`leadingEpoch` throws `not_leader` on a follower).

    public func register(_ request: RegistrationRequest) throws(TocsinError) -> LeaseReply {
        let at = now()
        let epoch = try leadingEpoch(at: at)
        let facts = try machine.withLock { m throws(TocsinError) in try m.register(request, now: at) }
        report(facts)
        let wall = wallMillis()
        control.withLock {
            $0.registered(
                id: request.id, role: .broker, incarnation: request.incarnation, version: request.version, startedAtMillis: request.startedAtMillis,
                nowMillis: wall)
        }
        return leaseReply(commands: [], epoch: epoch)
    }

    public func heartbeat(id: String, incarnation: String, load: BrokerLoad) throws(TocsinError) -> LeaseReply {
        try heartbeat(id: id, incarnation: incarnation, report: HeartbeatReport(load: load))
    }

    /// A heartbeat with everything a broker reports: its load renews its lease; its `draining`
    /// wish drains or undrains it; its configuration version and command results go to the
    /// operations plane, and the reply carries its configuration and commands.
    public func heartbeat(id: String, incarnation: String, report heartbeat: HeartbeatReport) throws(TocsinError) -> LeaseReply {
        let at = now()
        let epoch = try leadingEpoch(at: at)
        let (config, orders, undrained) = operations(for: id, incarnation: incarnation, report: heartbeat)
        let (commands, facts) = try machine.withLock { m throws(TocsinError) in
            let commands = try m.heartbeat(id: id, incarnation: incarnation, load: heartbeat.load, now: at)
            var facts: [ControllerStateMachine.Fact] = []
            if heartbeat.draining == true {
                facts = try m.drainIfActive(id: id, incarnation: incarnation, now: at)
            } else if undrained {
                facts = try m.undrain(id: id, incarnation: incarnation, now: at)
            }
            return (commands, facts)
        }
        report(facts)
        for c in commands {
            logger.info("ordered migration", metadata: ["from": "\(id)", "to": "\(c.to.id)", "clients": "\(c.count)", "reason": "\(c.reason)"])
        }
        let (view, version) = heartbeatView(known: heartbeat.viewVersion)
        return LeaseReply(
            leaseMillis: configuration.leaseDuration.milliseconds, heartbeatMillis: configuration.heartbeatInterval.milliseconds,
            commands: commands.map { var c = $0; c.epoch = epoch; return c }, cluster: view, epoch: epoch, config: config, orders: orders,
            viewVersion: version)
    }

    /// The broker takes no new clients; its clients are moved to the others.
    public func drain(id: String, incarnation: String) throws(TocsinError) -> LeaseReply {
        let at = now()
        let epoch = try leadingEpoch(at: at)
        let facts = try machine.withLock { m throws(TocsinError) in try m.drain(id: id, incarnation: incarnation, now: at) }
        report(facts)
        return leaseReply(commands: [], epoch: epoch)
    }

    public func deregister(id: String, incarnation: String) throws(TocsinError) {
        _ = try leadingEpoch(at: now())
        let facts = try machine.withLock { m throws(TocsinError) in try m.deregister(id: id, incarnation: incarnation) }
        report(facts)
    }

    // MARK: Client API

    /// The discovery list: the leader's own, or, on a follower, the registry as the leader last
    /// wrote it (at most one tick old).
    public var cluster: ClusterView {
        let brokers = machine.withLock { $0.live }
        let me = advertisedURL.withLock { $0 }
        let (leader, epoch) = leader(at: now(), me: me)
        return ClusterView(controller: me, brokers: brokers.map(BrokerSummary.init), leader: leader, epoch: epoch)
    }

    public func assign(_ request: AssignmentRequest) throws(TocsinError) -> AssignReply {
        assignments.add(1, ordering: .relaxed)
        metrics.assignments.increment()
        let at = now()
        let assignment = try machine.withLock { m throws(TocsinError) -> Assignment in try m.assign(request, now: at) }
        return AssignReply(assignment)
    }

    /// A registration's or drain's reply: always with the list (the heartbeat view, at most 250 ms old).
    private func leaseReply(commands: [MigrateCommand], epoch: Int64) -> LeaseReply {
        let (view, version) = heartbeatView(known: nil)
        return LeaseReply(
            leaseMillis: configuration.leaseDuration.milliseconds, heartbeatMillis: configuration.heartbeatInterval.milliseconds,
            commands: commands, cluster: view, epoch: epoch, viewVersion: version)
    }

    // MARK: Leases and balance

    /// One tick of the loop: with a ledger, the election and the registry
    /// (`Controller+Leadership.swift`) around `tick()`; alone, `tick()`.
    public func step() async {
        if let ledger {
            await leadershipTick(ledger)
        } else {
            tick()
        }
        await operationsTick()
        sampleForDashboard()
    }

    /// Expires leases, and when the cooldown allows, plans a rebalance and queues its orders.
    public func tick() {
        let at = now()
        report(machine.withLock { $0.tick(now: at) })
    }

    /// Logs and counts what the state machine did (outside its lock).
    func report(_ facts: [ControllerStateMachine.Fact]) {
        noteForDashboard(facts)
        for fact in facts {
            switch fact {
            case .registered, .restarted, .draining, .undrained, .deregistered, .expired: membershipChanges.add(1, ordering: .relaxed)
            default: break
            }
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
            case .undrained(let id):
                logger.notice("broker undrained: it takes clients again", metadata: ["broker": "\(id)"])
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
        metrics.leader.record(ledger == nil ? 1 : 0)
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: self.configuration.tickInterval)
                await self.step()
            }
        }
        stopping.store(true, ordering: .relaxed)
        await ledger?.close()
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
    /// 1 while this controller leads, 0 while it follows.
    let leader = Gauge(label: "tocsin_controller_leader")
    /// Operator commands given (`tocsin command`).
    let commands = Counter(label: "tocsin_controller_commands_total")
    /// Clients over capacity of the active brokers (0…1, above 1 when over): what an autoscaler
    /// (the HorizontalPodAutoscaler in deploy/kubernetes) sizes the broker count by.
    let utilization = Gauge(label: "tocsin_controller_utilization")

    /// The live brokers as of a tick, and the clients they last reported.
    func record(active: Int, draining: Int, clients count: Int) {
        activeBrokers.record(active)
        drainingBrokers.record(draining)
        clients.record(count)
    }
}
