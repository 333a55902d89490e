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
    /// A broker that cannot be restarted is tried again after 1 s, 2 s, 4 s … up to 30 s.
    static let restartBackoff = Backoff(initial: .seconds(1), maximum: .seconds(30))

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
        /// get `--store` too); brokers are given every controller's URL.
        public var controllers = 1
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
    /// The controllers, in start order (`Configuration.controllers`).
    public let controllers: [ChildProcess]
    /// The first controller.
    public var controller: ChildProcess { controllers[0] }
    /// Where the controllers listen: the bridge's address with namespaces, else `host`.
    public var controllerHost: String { configuration.namespaces?.bridgeAddress ?? configuration.host }
    public var controllerURL: String { controllerURLs[0] }
    public var controllerURLs: [String] { controllers.map { "\(scheme)://\(controllerHost):\($0.port)" } }
    /// `https` with TLS, else `http`.
    public var scheme: String { configuration.tls == nil ? "http" : "https" }

    private struct State {
        var processes: [String: ChildProcess] = [:]
        var members: [String: Member] = [:]
        /// Brokers stopped on purpose (not restarted by `supervise`).
        var stopped: Set<String> = []
        var nextNumber = 1
        var restarts = 0
    }

    private let state = Mutex(State())

    /// Starts the controller, then the first broker (it creates the store and the example
    /// data), then the others.
    public init(configuration: Configuration) async throws {
        self.configuration = configuration
        try FileManager.default.createDirectory(atPath: configuration.directory, withIntermediateDirectories: true)
        precondition(configuration.controllers >= 1 && (configuration.controllers == 1 || configuration.store != nil),
            "several controllers need a shared store to elect their leader in")
        let host = configuration.namespaces?.bridgeAddress ?? configuration.host
        var controllers: [ChildProcess] = []
        for i in 0..<configuration.controllers {
            let port = configuration.basePort == 0 || i == 0 ? configuration.basePort : 0
            let store = configuration.controllers > 1 ? ["--store", configuration.store!] : []
            let authentication = configuration.authenticationArguments
            controllers.append(
                try await ChildProcess(
                    executable: configuration.executable,
                    arguments: ["controller", "--host", host, "--port", "\(port)", "--log-level", configuration.logLevel]
                        + authentication + store + (configuration.tls?.serverArguments ?? []) + configuration.controllerArguments,
                    inheritStderr: configuration.showLogs))
        }
        self.controllers = controllers
        for _ in 0..<configuration.brokers {
            _ = try await addBroker()
        }
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
            + (configuration.tls.map { $0.serverArguments + ["--tls-ca", $0.trustedCA] } ?? []) + configuration.brokerArguments
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
        state.withLock { s in
            s.processes[id] = process
            s.members[id] = member
            s.stopped.remove(id)
        }
        return member
    }

    /// Kills a broker with `signal`. SIGKILL is a crash: `supervise` restarts it. Any other
    /// signal is a stop on purpose.
    public func kill(_ id: String, signal: Int32 = SIGKILL) async {
        let process = state.withLock { s -> ChildProcess? in
            if signal != SIGKILL { s.stopped.insert(id) }
            return s.processes[id]
        }
        guard let process else { return }
        process.signal(signal)
        _ = await process.exit()
    }

    /// Kills a broker with SIGKILL and does not restart it.
    public func crash(_ id: String) async {
        let process = state.withLock { s -> ChildProcess? in
            s.stopped.insert(id)
            s.members[id] = nil
            return s.processes.removeValue(forKey: id)
        }
        guard let process else { return }
        process.signal(SIGKILL)
        _ = await process.exit()
    }

    /// Restarts brokers that exit without being asked to, until cancelled. `report` hears of each restart.
    public func supervise(report: @escaping @Sendable (String) -> Void = { _ in }) async {
        // A broker that keeps failing to start is retried after 1 s, 2 s, 4 s … up to 30 s, not every tick.
        var failures: [String: (count: Int, retryAt: ContinuousClock.Instant)] = [:]
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            let dead = state.withLock { s in
                s.processes.filter { !$0.value.isRunning && !s.stopped.contains($0.key) }.map(\.key)
            }
            for id in dead.sorted() {
                guard let old = state.withLock({ $0.members[id] }) else { continue }
                if let f = failures[id], ContinuousClock.now < f.retryAt { continue }
                report("\(id) (pid \(old.pid)) exited; restarting it on port \(old.port) as incarnation \(old.incarnation + 1)")
                do {
                    let member = try await start(id: id, port: old.port, incarnation: old.incarnation + 1)
                    state.withLock { $0.restarts += 1 }
                    failures[id] = nil
                    report("\(id) is back (pid \(member.pid))")
                } catch {
                    // The dead process stays on the books, so a later round tries again.
                    let count = (failures[id]?.count ?? 0) + 1
                    let delay = Self.restartBackoff.ceiling(attempt: count - 1)
                    failures[id] = (count, .now + delay)
                    report("could not restart \(id): \(error); retrying in \(delay)")
                }
            }
        }
    }

    /// Stops everything. The controller goes first, so the brokers, finding nobody to drain
    /// to, close their connections at once instead of migrating clients among themselves.
    public func stop(signal: Int32 = SIGTERM) async {
        let processes = state.withLock { s in
            for id in s.processes.keys { s.stopped.insert(id) }
            return Array(s.processes.values)
        }
        for c in controllers { c.signal(SIGTERM) }
        for c in controllers { _ = await c.exit() }
        for p in processes { p.signal(signal) }
        for p in processes { _ = await p.exit() }
    }
}
