public import Foundation
import Synchronization
import TocsinCore

/// A broker network on one host, as separate processes: a controller and N brokers sharing one
/// store: a SQLite file (WAL), or a PostgreSQL database (`Configuration.store`). `tocsin dev` runs it for people, `tocsin bench` for measurements, the
/// integration tests to kill brokers with SIGKILL — all through this one type.
///
/// When `supervise` runs, a broker that exits without being asked to is started again on the
/// same port as a new incarnation, the way a deployment restores a deleted pod.
public final class LocalNetwork: Sendable {

    public struct Configuration: Sendable {
        var authenticationArguments: [String] { authKeys.map { ["--auth-keys", $0] } ?? ["--insecure-no-auth"] }

        public var executable = ChildProcess.tocsinBinary
        /// The shared store lives here.
        public var directory: String
        public var brokers = 3
        /// The controller's port; brokers take the next ones. 0: free ports everywhere.
        public var basePort = 0
        public var host = "127.0.0.1"
        public var logLevel = "warning"
        /// A PostgreSQL connection string the brokers share as their store (`--store`); nil: the
        /// SQLite file in `directory`.
        public var store: String?
        /// The network's key file (`--auth-keys`); nil runs every process with `--insecure-no-auth`.
        public var authKeys: String?
        /// Extra arguments for every broker (e.g. `--no-fsync`, `--capacity 5000`).
        public var brokerArguments: [String] = []
        /// Extra arguments for the controller (e.g. `--lease-ms 2000`).
        public var controllerArguments: [String] = []
        /// Print the processes' stderr (logs) to ours.
        public var showLogs = false
        /// How many controllers. More than one needs `store` (they elect a leader in it, and
        /// get `--store` too); brokers are given every controller's URL. 0 with `externalControllers`.
        public var controllers = 1
        /// Controllers running elsewhere (`tocsin supervise`): none is started here, and the
        /// brokers join these.
        public var externalControllers: [String] = []
        /// TLS on every listener: the controllers and brokers serve HTTPS/WSS with this
        /// certificate, and the brokers verify the controllers' against `trustedCA`. nil: plain
        /// HTTP. For `wss://` the WebSocket client needs a host name (`host = "localhost"`).
        public var tls: TLS?
        /// Hosts for the brokers: broker K runs in namespace (K-1) mod count, listening on that
        /// host's address, and the controllers listen on the bridge's address (so the store,
        /// too, must be reachable there). nil: every process on `host`.
        public var namespaces: NetworkNamespaces?

        public init(directory: String) {
            self.directory = directory
        }
    }

    /// The TLS files of a network (`Configuration.tls`).
    public struct TLS: Sendable {
        /// `--tls-cert` of every controller and broker.
        public var certificate: String
        /// `--tls-key` of every controller and broker.
        public var key: String
        /// `--tls-ca` of every broker: the CA it verifies the controllers' certificate against.
        public var trustedCA: String

        public init(certificate: String, key: String, trustedCA: String) {
            self.certificate = certificate
            self.key = key
            self.trustedCA = trustedCA
        }

        /// The server certificate of `certificates`, its CA trusted.
        public init(_ certificates: TestCertificates) {
            self.init(certificate: certificates.certificate, key: certificates.key, trustedCA: certificates.caCertificate)
        }

        var serverArguments: [String] { ["--tls-cert", certificate, "--tls-key", key] }
    }

    /// A broker process of the network.
    public struct Member: Sendable {
        public var id: String
        public var port: Int
        public var pid: Int32
        /// 1 for the first start, +1 per restart.
        public var incarnation: Int
        public var httpURL: String
        /// The host (network namespace) it runs in, if any.
        public var namespace: NetworkNamespaces.Host?
        public var webSocketURL: String { BaseURL.webSocketURL(forHTTP: httpURL) }
    }

    public let configuration: Configuration
    /// The controllers' processes now, in start order (`controller-1`, …): a controller killed
    /// while `supervise` runs is restarted on its port.
    public var controllers: [ChildProcess] {
        state.withLock { s in (0..<configuration.controllers).compactMap { s.controllerProcesses["controller-\($0 + 1)"] } }
    }
    /// The first controller.
    public var controller: ChildProcess { controllers[0] }
    /// Where the controllers listen: the bridge's address with namespaces, else `host`.
    public var controllerHost: String { configuration.namespaces?.bridgeAddress ?? configuration.host }
    public var controllerURL: String { controllerURLs[0] }
    /// Fixed once the controllers first listen (a restart reuses the port).
    public var controllerURLs: [String] {
        if !configuration.externalControllers.isEmpty { return configuration.externalControllers }
        return state.withLock { s in (0..<configuration.controllers).compactMap { s.controllerPorts["controller-\($0 + 1)"] } }
            .map { "\(scheme)://\(controllerHost):\($0)" }
    }
    /// `https` with TLS, else `http`.
    public var scheme: String { configuration.tls == nil ? "http" : "https" }

    private struct State {
        var processes: [String: ChildProcess] = [:]
        var members: [String: Member] = [:]
        var controllerProcesses: [String: ChildProcess] = [:]
        var controllerPorts: [String: Int] = [:]
        var controllerIncarnations: [String: Int] = [:]
        /// Workers stopped on purpose (not restarted by `supervise`).
        var stopped: Set<String> = []
        var nextNumber = 1
        var restarts = 0
        /// Workers whose current process's exit the supervisor has seen (cleared by a start).
        var exitNoted: Set<String> = []
        /// `stop()` began: a process started meanwhile (a restart in flight) is stopped at once.
        var closing = false
    }

    private let state = Mutex(State())
    /// The supervisor's decisions (`supervise`).
    private let supervision = Mutex(Supervision())
    private let origin = ContinuousClock.now
    private var now: Duration { ContinuousClock.now - origin }

    /// Starts the controllers, then the first broker (it creates the store and the example
    /// data), then the others.
    public init(configuration: Configuration) async throws {
        self.configuration = configuration
        try FileManager.default.createDirectory(atPath: configuration.directory, withIntermediateDirectories: true)
        precondition(configuration.controllers >= 0 && (configuration.controllers <= 1 || configuration.store != nil),
            "several controllers need a shared store to elect their leader in")
        precondition((configuration.controllers == 0) != configuration.externalControllers.isEmpty,
            "brokers need controllers: started here, or external ones, not both")
        for i in stride(from: 1, through: configuration.controllers, by: 1) {
            let port = configuration.basePort == 0 || i > 1 ? 0 : configuration.basePort
            try await startController(id: "controller-\(i)", port: port)
        }
        for _ in 0..<configuration.brokers {
            _ = try await addBroker()
        }
    }

    private func startController(id: String, port: Int) async throws {
        let host = configuration.namespaces?.bridgeAddress ?? configuration.host
        let store = configuration.controllers > 1 ? ["--store", configuration.store!] : []
        let process = try await ChildProcess(
            executable: configuration.executable,
            arguments: ["controller", "--host", host, "--port", "\(port)", "--log-level", configuration.logLevel]
                + configuration.authenticationArguments + store + (configuration.tls?.serverArguments ?? []) + configuration.controllerArguments,
            inheritStderr: configuration.showLogs)
        let closing = state.withLock { s in
            s.controllerProcesses[id] = process
            s.controllerPorts[id] = process.port
            s.controllerIncarnations[id, default: 0] += 1
            s.stopped.remove(id)
            s.exitNoted.remove(id)
            return s.closing
        }
        if closing { await Self.stopLate(process) }
        supervision.withLock { $0.started(id, now: now) }
    }

    public var members: [Member] { state.withLock { $0.members.values.sorted { $0.id < $1.id } } }
    public var restarts: Int { state.withLock { $0.restarts } }

    public func member(_ id: String) -> Member? { state.withLock { $0.members[id] } }

    /// Starts one more broker, `broker-K` with the next free K.
    @discardableResult
    public func addBroker() async throws -> Member {
        let number = state.withLock { s in
            defer { s.nextNumber += 1 }
            return s.nextNumber
        }
        let id = "broker-\(number)"
        let port = configuration.basePort == 0 ? 0 : configuration.basePort + number
        return try await start(id: id, port: port, incarnation: 1)
    }

    private func start(id: String, port: Int, incarnation: Int) async throws -> Member {
        // broker-K on host K-1, round the hosts.
        let authentication = configuration.authenticationArguments
        let number = Int(id.split(separator: "-").last ?? "") ?? 1
        let namespace = configuration.namespaces.map { $0.hosts[max(number - 1, 0) % $0.hosts.count] }
        let host = namespace?.address ?? configuration.host
        let arguments = [
            "broker", "--controller", controllerURLs.joined(separator: ","), "--broker-id", id, "--host", host, "--port", "\(port)",
            "--data-dir", configuration.directory, "--log-level", configuration.logLevel,
        ] + authentication + (configuration.store.map { ["--store", $0] } ?? [])
            + (configuration.tls.map { $0.serverArguments + ["--tls-ca", $0.trustedCA] } ?? [])
            // The controllers' pages (the dashboard, the demo) may open WebSockets to the brokers.
            + controllerURLs.flatMap { ["--allow-origin", $0] } + configuration.brokerArguments
        let process: ChildProcess
        if let namespaces = configuration.namespaces, let namespace {
            process = try await namespaces.start(
                on: namespace, executable: configuration.executable, arguments: arguments, inheritStderr: configuration.showLogs)
        } else {
            process = try await ChildProcess(executable: configuration.executable, arguments: arguments, inheritStderr: configuration.showLogs)
        }
        let member = Member(
            id: id, port: process.port, pid: process.pid, incarnation: incarnation, httpURL: "\(scheme)://\(host):\(process.port)",
            namespace: namespace)
        let closing = state.withLock { s in
            s.processes[id] = process
            s.members[id] = member
            s.stopped.remove(id)
            s.exitNoted.remove(id)
            return s.closing
        }
        if closing { await Self.stopLate(process) }
        supervision.withLock { $0.started(id, now: now) }
        return member
    }

    /// A process that started after `stop()` began (a restart in flight): stopped at once, so
    /// nothing outlives the network.
    private static func stopLate(_ process: ChildProcess) async {
        process.signal(SIGKILL)
        _ = await process.exit()
    }

    // MARK: Workers

    /// Every controller and broker, controllers first.
    public var workers: [WorkerSummary] {
        let machine = supervision.withLock { $0.workers }
        return state.withLock { s in
            func stateOf(_ id: String, _ process: ChildProcess) -> String {
                if s.stopped.contains(id) { return "stopped" }
                if machine[id] == .gaveUp { return "gave-up" }
                if case .running = machine[id], process.isRunning { return "running" }
                return "restarting"
            }
            var list: [WorkerSummary] = []
            for (id, process) in s.controllerProcesses.sorted(by: { $0.key < $1.key }) {
                list.append(
                    WorkerSummary(
                        role: "controller", id: id, pid: process.pid, url: "\(scheme)://\(controllerHost):\(process.port)",
                        incarnation: s.controllerIncarnations[id] ?? 1, state: stateOf(id, process)))
            }
            for (id, member) in s.members.sorted(by: { $0.key < $1.key }) {
                guard let process = s.processes[id] else { continue }
                list.append(
                    WorkerSummary(role: "broker", id: id, pid: process.pid, url: member.httpURL, incarnation: member.incarnation, state: stateOf(id, process)))
            }
            return list
        }
    }

    private func process(of id: String) -> ChildProcess? {
        state.withLock { $0.processes[id] ?? $0.controllerProcesses[id] }
    }

    /// Kills a worker (broker or controller) with `signal`. SIGKILL is a crash: `supervise`
    /// restarts it. Any other signal is a stop on purpose.
    public func kill(_ id: String, signal: Int32 = SIGKILL) async {
        if signal != SIGKILL {
            state.withLock { _ = $0.stopped.insert(id) }
            supervision.withLock { $0.stopping(id) }
        }
        guard let process = process(of: id) else { return }
        process.signal(signal)
        _ = await process.exit()
    }

    /// Pauses a worker (SIGSTOP) for `duration`, then resumes it (SIGCONT). A pause longer than
    /// the supervisor's health checks allow gets it killed and restarted, as a hung process would.
    public func pause(_ id: String, for duration: Duration) async {
        guard let process = process(of: id) else { return }
        process.signal(SIGSTOP)
        try? await Task.sleep(for: duration)
        process.signal(SIGCONT)
    }

    /// Stops a broker on purpose with SIGTERM (it drains: its clients move away first) and
    /// forgets it once it has exited.
    public func stopBroker(_ id: String) async {
        await kill(id, signal: SIGTERM)
        state.withLock { s in
            s.members[id] = nil
            s.processes[id] = nil
        }
        supervision.withLock { $0.remove(id) }
    }

    /// Kills a broker with SIGKILL and does not restart it.
    public func crash(_ id: String) async {
        let process = state.withLock { s -> ChildProcess? in
            s.stopped.insert(id)
            s.members[id] = nil
            return s.processes.removeValue(forKey: id)
        }
        supervision.withLock { $0.stopping(id) }
        guard let process else { return }
        process.signal(SIGKILL)
        _ = await process.exit()
    }

    /// Keeps the workers alive until cancelled (`Supervision` decides): a worker that exits
    /// without being asked to is restarted on its port as a new incarnation, at once and then
    /// with backoff; one that fails `health` checks (`healthInterval` apart, each given a
    /// second) `policy.unhealthyAfter` times in a row is killed and restarted; a crash loop is
    /// given up on. `report` hears of each.
    public func supervise(
        policy: Supervision.Policy = Supervision.Policy(), healthInterval: Duration = .seconds(1),
        health: (@Sendable (_ url: String) async -> Bool)? = nil,
        report: @escaping @Sendable (String) -> Void = { _ in }
    ) async {
        supervision.withLock { m in
            let current = m.workers
            m = Supervision(policy: policy)
            for (id, state) in current { if state == .stopped { m.stopping(id) } else { m.started(id, now: now) } }
        }
        var nextCheck = ContinuousClock.now + healthInterval
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            var actions: [Supervision.Action] = []
            let at = now
            // Exits.
            let dead = state.withLock { s in
                let exited = (s.processes.map { ($0.key, $0.value) } + s.controllerProcesses.map { ($0.key, $0.value) })
                    .filter { !$0.1.isRunning && !s.stopped.contains($0.0) && !s.exitNoted.contains($0.0) }
                for (id, _) in exited { s.exitNoted.insert(id) }
                return exited
            }
            for (id, process) in dead {
                report("\(id) (pid \(process.pid)) exited")
                actions += supervision.withLock { $0.exited(id, now: at) }
            }
            // Health checks.
            if let health, ContinuousClock.now >= nextCheck {
                nextCheck = ContinuousClock.now + healthInterval
                let running = workers.filter { $0.state == "running" }
                let results = await withTaskGroup(of: (String, Bool).self) { group in
                    for w in running {
                        group.addTask { (w.id, await firstOrNil(within: .seconds(1)) { await health(w.url) ? true : nil } ?? false) }
                    }
                    var results: [(String, Bool)] = []
                    for await r in group { results.append(r) }
                    return results
                }
                let checkedAt = now
                for (id, ok) in results.sorted(by: { $0.0 < $1.0 }) { actions += supervision.withLock { $0.checked(id, ok: ok, now: checkedAt) } }
            }
            actions += supervision.withLock { $0.tick(now: at) }
            for action in actions { await carryOut(action, report: report) }
        }
    }

    private func carryOut(_ action: Supervision.Action, report: @Sendable (String) -> Void) async {
        switch action {
        case .kill(let id, let failed):
            report("\(id) failed \(failed) health checks in a row; killing it (SIGKILL)")
            process(of: id)?.signal(SIGKILL)
        case .giveUp(let id, let restarts, let within):
            report("\(id) restarted \(restarts) times within \(within): a crash loop; not restarting it (see its log)")
        case .start(let id):
            do {
                if let port = state.withLock({ $0.controllerPorts[id] }) {
                    try await startController(id: id, port: port)
                    report("\(id) is back")
                } else if let old = member(id) {
                    report("restarting \(id) on port \(old.port) as incarnation \(old.incarnation + 1)")
                    let member = try await start(id: id, port: old.port, incarnation: old.incarnation + 1)
                    report("\(id) is back (pid \(member.pid))")
                } else {
                    return
                }
                state.withLock { $0.restarts += 1 }
            } catch {
                let at = now
                _ = supervision.withLock { $0.startFailed(id, now: at) }
                report("could not restart \(id): \(error); trying again")
            }
        }
    }

    /// Sizes the broker count until cancelled (`Autoscaler` decides): every `interval` it reads
    /// the brokers' load figures (`observe`: the controller's discovery list, nil when it cannot
    /// be read) and starts one more broker, or stops the least loaded with SIGTERM, which drains
    /// it (its clients move away make-before-break) before it exits.
    public func autoscale(
        policy: Autoscaler.Policy, interval: Duration = .seconds(1), observe: @escaping @Sendable () async -> [BrokerSummary]?,
        report: @escaping @Sendable (String) -> Void = { _ in }
    ) async {
        var scaler = Autoscaler(policy: policy)
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            guard let view = await observe() else { continue }
            let ours = Set(members.map(\.id))
            let brokers = view.filter { ours.contains($0.id) }
            let decision = scaler.observe(brokers, running: ours.count, now: now)
            switch decision {
            case .hold:
                break
            case .addBroker(let count):
                report(String(format: "utilization %.2f: adding a broker (%d)", scaler.utilization(brokers), count))
                do {
                    let member = try await addBroker()
                    report("\(member.id) started (pid \(member.pid))")
                } catch {
                    report("could not start a broker: \(error)")
                }
            case .drain(let id):
                report(String(format: "utilization %.2f: ", scaler.utilization(brokers)) + "draining and stopping \(id)")
                Task {
                    await self.stopBroker(id)
                    report("\(id) drained and stopped")
                }
            }
        }
    }

    /// Stops everything. The controllers go first, so the brokers, finding nobody to drain
    /// to, close their connections at once instead of migrating clients among themselves.
    public func stop(signal: Int32 = SIGTERM) async {
        let (processes, controllers) = state.withLock { s in
            s.closing = true
            for id in s.processes.keys { s.stopped.insert(id) }
            for id in s.controllerProcesses.keys { s.stopped.insert(id) }
            return (Array(s.processes.values), Array(s.controllerProcesses.values))
        }
        supervision.withLock { m in for id in m.workers.keys { m.stopping(id) } }
        for c in controllers { c.signal(SIGTERM) }
        for c in controllers { _ = await c.exit() }
        for p in processes { p.signal(signal) }
        for p in processes { _ = await p.exit() }
    }
}
