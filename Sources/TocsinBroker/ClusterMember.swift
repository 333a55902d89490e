import Logging
import ServiceLifecycle
import Synchronization
import TocsinHTTPClient
import TocsinCore

/// A broker's membership in a network: registers with the controller, renews its lease with
/// heartbeats carrying its load, carries out the migrate orders that come back, keeps the
/// discovery list fresh, and on graceful shutdown drains (its clients migrate away) before it
/// deregisters.
///
/// It runs as its own service *after* the HTTP server in the service group, so on shutdown it
/// finishes draining while the server still serves the clients it is moving.
final class ClusterMember: Service, Sendable {
    let broker: Broker
    private let client: ControllerClient
    let settings: ClusterSettings
    let logger: Logger
    private let machine: Mutex<StateMachine>
    /// Live configuration and operator commands, as the controller sends them.
    let operations: BrokerOperations
    /// Graceful shutdown asked the controller to drain this broker.
    private let shuttingDown = Atomic<Bool>(false)
    /// The member's clock: `now` arguments of the state machine are measured from here.
    private let origin = ContinuousClock.now

    /// `controller` is the broker's client of the controller's API; the broker closes it.
    init(broker: Broker, controller: ControllerClient, settings: ClusterSettings, logger: Logger) {
        self.broker = broker
        self.client = controller
        self.settings = settings
        self.logger = logger
        operations = BrokerOperations(broker: broker)
        machine = Mutex(StateMachine(brokerID: broker.configuration.brokerID, drainTimeout: settings.drainTimeout))
    }

    /// The incarnation the controller knows this broker by: the process's own at first; a new
    /// one each time it registers again after the controller forgot it (its lease ran out while
    /// it was cut off or paused), since its clients have meanwhile been sent elsewhere and it
    /// rejoins as a new member.
    private let membership = Mutex<(incarnation: String, registrations: Int)>(("", 0))

    var incarnation: String {
        membership.withLock { $0.registrations == 0 ? broker.incarnation : $0.incarnation }
    }

    /// The incarnation for the next registration: the process's own the first time, a new one after.
    private func nextIncarnation() -> String {
        membership.withLock { m in m.registrations == 0 ? broker.incarnation : "\(broker.incarnation).\(m.registrations)" }
    }

    private func registered(as incarnation: String) {
        membership.withLock { m in
            m.incarnation = incarnation
            m.registrations += 1
        }
    }

    /// Whether heartbeats ask to be draining: told so by a `drain` command, or shutting down.
    private var wantsDrain: Bool { shuttingDown.load(ordering: .relaxed) || operations.drainCommanded }

    /// The controller's discovery list as of the last heartbeat.
    var view: ClusterView? { machine.withLock { $0.view } }

    /// The controller this broker talks to now (the leader, as far as it knows).
    var controller: String { client.url }

    private var now: Duration { ContinuousClock.now - origin }

    func registration(port: Int) -> RegistrationRequest {
        let http = settings.advertisedURL ?? "\(broker.configuration.scheme)://\(broker.configuration.host):\(port)"
        var request = RegistrationRequest(
            id: broker.configuration.brokerID, incarnation: broker.incarnation, webSocketURL: BaseURL.webSocketURL(forHTTP: http),
            httpURL: http, region: settings.region, location: settings.location, capacity: settings.capacity)
        request.version = TocsinVersion.current
        request.startedAtMillis = broker.startedAtMillis
        return request
    }

    func run() async throws {
        // Wait for the server to listen: the registration advertises its port.
        guard let port = await broker.address.port() else { return }
        let request = registration(port: port)
        let client = self.client
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.heartbeats(client, request) }
            // Returns when graceful shutdown starts (or throws when cancelled: then no drain).
            let graceful = (try? await gracefulShutdown()) != nil
            if graceful { await self.drain(client) }
            group.cancelAll()
        }
        if step({ $0.shutdown() }).contains(.deregister) {
            do {
                try await client.deregister(id: broker.configuration.brokerID, incarnation: incarnation)
            } catch {
                carryOut(step { $0.deregisterFailed("\(error)") })
            }
        }
    }

    // MARK: Heartbeats

    /// Registers, renews the lease and carries out the orders that come back, until cancelled.
    private func heartbeats(_ client: ControllerClient, _ request: RegistrationRequest) async {
        var meter = LoadMeter(totals: broker.metrics.totals)
        var actions = step { $0.start() }
        while !actions.isEmpty, !Task.isCancelled {
            var next: [StateMachine.Action] = []
            for action in actions {
                switch action {
                case .register:
                    var request = request
                    request.incarnation = nextIncarnation()
                    request.draining = wantsDrain
                    next = await outcome(client) { [request] timeout in
                        let reply = try await client.register(request, timeout: timeout)
                        self.registered(as: request.incarnation)
                        return { $0.registered(reply) }
                    }
                case .heartbeat:
                    broker.sessions.closeStaleMigrations(olderThan: settings.migrationTimeout)
                    let report = HeartbeatReport(
                        load: meter.sample(broker.currentLoad()), draining: wantsDrain, configVersion: operations.configVersion,
                        results: operations.unreported, viewVersion: machine.withLock { $0.viewVersion })
                    next = await outcome(client) { timeout in
                        let reply = try await client.heartbeat(
                            id: self.broker.configuration.brokerID, incarnation: self.incarnation, report: report, timeout: timeout)
                        self.operations.reported(report.results)
                        return { $0.answered(reply) }
                    }
                case .requestDrain:
                    next = await outcome(client) { timeout in
                        let reply = try await client.drain(id: self.broker.configuration.brokerID, incarnation: self.incarnation, timeout: timeout)
                        return { $0.answered(reply) }
                    }
                case .sleep(let duration):
                    try? await Task.sleep(for: duration)
                    next = step { $0.woke() }
                case .migrate, .log, .deregister, .drainEnded, .configure, .execute:
                    carryOut([action], registration: request)
                }
            }
            actions = next
        }
    }

    /// Makes a call to the controller and feeds its outcome to the state machine: the reply
    /// (through the event `call` returns), a refusal, or no answer. Empty when cancelled.
    private func outcome(
        _ client: ControllerClient,
        _ call: (Duration) async throws -> (inout StateMachine) -> [StateMachine.Action]
    ) async -> [StateMachine.Action] {
        let timeout = machine.withLock { $0.requestTimeout }
        do {
            let event = try await call(timeout)
            return step { event(&$0) }
        } catch let error as TocsinError {
            return step { $0.refused(error) }
        } catch {
            if Task.isCancelled { return [] }
            return step { $0.unreachable("\(error)") }
        }
    }

    // MARK: Drain

    /// Tells the controller this broker is leaving; its clients get migrate orders through the
    /// heartbeats, which keep running. Waits until they have gone, every other broker has left,
    /// or `drainTimeout` passes.
    private func drain(_ client: ControllerClient) async {
        shuttingDown.store(true, ordering: .relaxed)
        var actions = step { $0.drainStarted() }
        while !actions.isEmpty {
            var next: [StateMachine.Action] = []
            for action in actions {
                switch action {
                case .requestDrain:
                    do {
                        let timeout = machine.withLock { $0.requestTimeout }
                        let reply = try await client.drain(id: broker.configuration.brokerID, incarnation: incarnation, timeout: timeout)
                        let (clients, at) = (broker.sessions.identifiedCount, now)
                        next = step { $0.drainAccepted(reply, identifiedSessions: clients, now: at) }
                    } catch {
                        next = step { $0.drainFailed("\(error)") }
                    }
                case .sleep(let duration):
                    try? await Task.sleep(for: duration)
                    let (clients, at) = (broker.sessions.identifiedCount, now)
                    next = step { $0.drainProgress(identifiedSessions: clients, now: at) }
                case .drainEnded:
                    return
                case .migrate, .log, .register, .heartbeat, .deregister, .configure, .execute:
                    carryOut([action])
                }
            }
            actions = next
        }
    }

    /// Runs one step of the machine under its lock; then, outside it, publishes the discovery
    /// list it holds to the broker (`GET /v1/cluster`).
    private func step(_ body: (inout StateMachine) -> [StateMachine.Action]) -> [StateMachine.Action] {
        let (actions, view) = machine.withLock { m in (body(&m), m.view) }
        if let view { broker.discovery?.update(view) }
        return actions
    }

    /// Carries out the actions that need no answer: migrate orders and logs.
    private func carryOut(_ actions: [StateMachine.Action], registration: RegistrationRequest? = nil) {
        for action in actions {
            switch action {
            case .migrate(let count, let to, let reason):
                broker.sessions.migrate(count: count, to: to, reason: reason)
            case .log(let fact):
                log(fact, registration: registration)
            case .configure(let push):
                operations.apply(push)
            case .execute(let order):
                operations.execute(order)
            case .register, .heartbeat, .requestDrain, .deregister, .sleep, .drainEnded:
                break
            }
        }
    }

    private func log(_ fact: StateMachine.Fact, registration: RegistrationRequest?) {
        switch fact {
        case .registered:
            logger.info(
                "registered with the controller",
                metadata: ["controller": "\(controller)", "ws": "\(registration?.webSocketURL ?? "")", "incarnation": "\(incarnation)"])
        case .forgotten(let reason):
            logger.warning("controller does not know this broker; registering again", metadata: ["reason": "\(reason)"])
        case .refused(let code, let message):
            logger.error("controller refused this broker", metadata: ["code": "\(code)", "reason": "\(message)"])
        case .unreachable(let error):
            logger.warning("controller unreachable", metadata: ["controller": "\(controller)", "error": "\(error)"])
        case .noLeader(let message):
            logger.warning("no controller leads right now; asking again", metadata: ["controller": "\(controller)", "reason": "\(message)"])
        case .nothingToDrainTo:
            logger.info("no other broker to drain to; closing connections")
        case .drainNotStarted(let error):
            logger.warning("could not start draining; clients will fail over", metadata: ["error": "\(error)"])
        case .draining(let clients):
            logger.notice("draining: moving clients to other brokers", metadata: ["clients": "\(clients)"])
        case .drained:
            logger.notice("drained")
        case .nowhereLeftToDrainTo(let clients):
            logger.warning("every other broker left; closing the remaining connections", metadata: ["clients": "\(clients)"])
        case .drainTimedOut(let clients):
            logger.warning("drain timed out; closing the remaining connections", metadata: ["clients": "\(clients)"])
        case .deregisterFailed(let error):
            logger.warning("could not deregister; the lease will expire", metadata: ["error": "\(error)"])
        case .staleOrders(let count, let epoch, let highest, let reply):
            broker.metrics.staleOrdersRefused.increment(by: Int64(count))
            logger.warning(
                reply ? "refused a reply from a deposed controller" : "refused an order from a deposed controller",
                metadata: ["epoch": "\(epoch)", "highest": "\(highest)", "orders": "\(count)", "controller": "\(controller)"])
        }
    }
}
