import ArgumentParser
import TocsinHTTP
import TocsinHTTPClient
import Synchronization
import Logging
import Dispatch
import Foundation
import TocsinClient
import TocsinController
import TocsinCore
import TocsinDev
import TocsinAuth
import TocsinStore

/// `tocsin dev --brokers N`: a local network of separate processes in one command.
struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local broker network: a controller and N broker processes sharing one store (SQLite, or PostgreSQL with --store), supervised.",
        discussion: """
            The controller listens on --port, the brokers on the ports after it. A worker that crashes or stops
            answering /healthz is restarted (a new incarnation) on its port, with backoff, and given up on in a
            crash loop; Ctrl-C stops everything. Try `tocsin status` beside it. --autoscale sizes the broker
            count from the controller's load figures; --enable-chaos serves the chaos API (`tocsin chaos`).
            """)

    @Option(help: "How many brokers (with --autoscale: to start with).")
    var brokers = 3

    @Option(help: "How many controllers; more than one needs --store (they elect a leader in PostgreSQL).")
    var controllers = 1

    @Option(help: "The controller's port; brokers take the next ones (0: free ports everywhere).")
    var port = 7300

    @OptionGroup var processes: SupervisedProcessOptions

    @Flag(name: .customLong("no-fsync"), help: "Brokers commit with synchronous=NORMAL.")
    var noFsync = false

    @OptionGroup var auth: AuthOptions

    @Flag(
        name: .customLong("tls"),
        help: "Serve HTTPS/WSS with a throwaway CA made in --data-dir/tls (openssl), for localhost; clients need --tls-ca --data-dir/tls/ca.pem.")
    var tls = false

    @OptionGroup var scaling: AutoscaleOptions

    mutating func validate() throws {
        guard (1...64).contains(brokers) else { throw ValidationError("--brokers must be in 1...64") }
        guard (1...5).contains(controllers) else { throw ValidationError("--controllers must be in 1...5") }
        guard controllers == 1 || processes.store != nil else { throw ValidationError("--controllers above 1 needs --store (a PostgreSQL database to elect a leader in)") }
        guard port == 0 || (2...(65535 - 64)).contains(port) else { throw ValidationError("--port must leave room for the brokers' ports") }
        _ = try scaling.policy()
    }

    func run() async throws {
        var configuration = processes.configuration()
        let (dataDirectory, store) = (processes.dataDirectory, processes.store)
        configuration.brokers = brokers
        configuration.controllers = controllers
        configuration.basePort = port
        if noFsync { configuration.brokerArguments.append("--no-fsync") }
        // The network's key: given, or kept (made on first start) in the data directory.
        let authority = try await auth.authority(defaultKeyFile: dataDirectory + "/auth-keys.json", port: port)
        if authority != nil { configuration.authKeys = auth.keyFile ?? dataDirectory + "/auth-keys.json" }
        for origin in auth.allowedOrigins {
            configuration.brokerArguments += ["--allow-origin", origin]
            configuration.controllerArguments += ["--allow-origin", origin]
        }
        var certificates: TestCertificates?
        if tls {
            // wss:// needs a host name the certificate names (the WebSocket client sends it as SNI).
            configuration.host = "localhost"
            certificates = try TestCertificates(directory: dataDirectory + "/tls")
            configuration.tls = certificates.map { LocalNetwork.TLS($0) }
        }
        let trust = try certificates.map { try TLSTrust(caFile: $0.caCertificate) } ?? .system
        let network = try await LocalNetwork(configuration: configuration)
        for (i, url) in network.controllerURLs.enumerated() {
            print("controller-\(i + 1)  \(url)   (discovery: \(url)/v1/cluster)")
        }
        for m in network.members {
            print("\(m.id)    \(m.httpURL)   \(m.webSocketURL)   pid \(m.pid)")
        }
        if let certificates {
            print("TLS: a throwaway CA; clients trust it with --tls-ca \(certificates.caCertificate)")
        }
        if let authority { try await printAdminToken(authority) }
        print("data in \(store.map { _ in "the PostgreSQL database of --store" } ?? dataDirectory); Ctrl-C stops the network")
        fflushStdout()

        try await supervise(
            network, name: "dev", authority: authority, trust: trust, scaling: scaling,
            chaos: processes.chaos(host: configuration.host, port: port))
    }
}

/// Runs what keeps a host's network alive until SIGINT or SIGTERM (`tocsin dev`, `tocsin
/// supervise`): restarts through health checks, the autoscaler when asked, the chaos API when
/// asked (on `chaos`: host and port); then stops the network.
func supervise(
    _ network: LocalNetwork, name: String, authority: TokenAuthority?, trust: TLSTrust, scaling: AutoscaleOptions, chaos: (host: String, port: Int)?
) async throws {
    // The supervisor's own calls: health checks, the discovery list, who leads.
    let http = HTTPCall.shared(trusting: trust)
    var controllerClient = ControllerClient(urls: network.controllerURLs, httpClient: http)
    if let authority {
        controllerClient.token = MintedToken(authority: authority, client: "\(name)-supervisor", scopes: [.discovery], nowMillis: Token.nowMillis).source
    }
    let client = controllerClient
    let say: @Sendable (String) -> Void = { line in
        print("\(name): " + line)
        fflushStdout()
    }
    let tasks = Mutex<[Task<Void, Never>]>([])
    tasks.withLock {
        $0.append(
            Task {
                await network.supervise(
                    health: { url in
                        (try? await HTTPCall.send(.GET, BaseURL.join(url, "/healthz"), timeout: .seconds(1), using: http))?.status == 200
                    }, report: say)
            })
    }
    if scaling.autoscale {
        let policy = try scaling.policy()
        say("autoscaling between \(policy.minimum) and \(policy.maximum) brokers (out above \(policy.scaleOutAbove), in below \(policy.scaleInBelow))")
        tasks.withLock {
            $0.append(Task { await network.autoscale(policy: policy, observe: { try? await client.cluster(timeout: .seconds(2)).brokers }, report: say) })
        }
    }
    if let (host, port) = chaos {
        var chaosLogger = Logger(label: "tocsin.chaos")
        chaosLogger.logLevel = .notice
        let workers = ChaosServer.Workers(
            list: { network.workers }, kill: { await network.kill($0) }, pause: { await network.pause($0, for: $1) },
            leader: { try? await client.cluster(timeout: .seconds(2)).leader })
        let server = ChaosServer(workers: workers, logger: chaosLogger)
        let authentication: Authentication = authority.map { .tokens($0) } ?? .disabled
        tasks.withLock {
            $0.append(
                Task {
                    do {
                        try await server.run(host: host, port: port, authentication: authentication) { bound in
                            print("chaos API listening on http://\(host):\(bound) (GET /v1/workers, POST /v1/chaos; `tocsin chaos --url http://\(host):\(bound)`)")
                            fflushStdout()
                        }
                    } catch {
                        say("the chaos API stopped: \(error)")
                    }
                })
        }
    }
    await TerminationSignal.wait()
    for t in tasks.withLock({ $0 }) { t.cancel() }
    print("\(name): stopping")
    await network.stop()
}

/// `tocsin supervise`: this host's brokers, kept alive (and sized) for controllers elsewhere.
struct Supervise: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run and keep alive this host's brokers of a network whose controllers run elsewhere: restarts on exit or failed health checks (backoff, crash-loop limit), optional autoscaling.",
        discussion: """
            Brokers are broker-1 … broker-N on the ports after --port, joining --controller, sharing --store (or the
            SQLite file in --data-dir, for one host). Ctrl-C or SIGTERM drains and stops them.
            """)

    @Option(help: "How many brokers (with --autoscale: to start with).")
    var brokers = 2

    @Option(help: "The controllers' URLs, comma-separated (env TOCSIN_CONTROLLER).")
    var controller: String = Environment.get("TOCSIN_CONTROLLER") ?? "http://127.0.0.1:7300"

    @Option(help: "Brokers take the ports after this one (0: free ports).")
    var port = 7400

    @Option(name: .customLong("host"), help: "The address brokers listen on (and advertise).")
    var host = "127.0.0.1"

    @OptionGroup var processes: SupervisedProcessOptions
    @OptionGroup var auth: AuthOptions
    @OptionGroup var scaling: AutoscaleOptions

    mutating func validate() throws {
        guard (1...64).contains(brokers) else { throw ValidationError("--brokers must be in 1...64") }
        guard port == 0 || (2...(65535 - 64)).contains(port) else { throw ValidationError("--port must leave room for the brokers' ports") }
        _ = try scaling.policy()
    }

    func run() async throws {
        var configuration = processes.configuration()
        configuration.brokers = brokers
        configuration.controllers = 0
        configuration.externalControllers = controller.split(separator: ",").map { BaseURL.trimmed(String($0)) }
        configuration.basePort = port
        configuration.host = host
        // The network's key file (brokers mint their cluster credential from it), or --insecure-no-auth.
        let authority = try await auth.authority(defaultKeyFile: nil, port: port)
        if authority != nil { configuration.authKeys = auth.keyFile }
        let network = try await LocalNetwork(configuration: configuration)
        for m in network.members {
            print("\(m.id)    \(m.httpURL)   \(m.webSocketURL)   pid \(m.pid)")
        }
        fflushStdout()
        try await supervise(
            network, name: "supervise", authority: authority, trust: .system, scaling: scaling,
            chaos: processes.chaos(host: host, port: port))
    }
}

/// What `tocsin dev` and `tocsin supervise` share: where the processes keep their data, their
/// log level and capacity, and the chaos API.
struct SupervisedProcessOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Directory of the shared SQLite store (env TOCSIN_DATA_DIR).")
    var dataDirectory: String = Environment.get("TOCSIN_DATA_DIR") ?? "./tocsin-data"

    @Option(name: .customLong("store"), help: "A PostgreSQL connection string the brokers share instead of the SQLite file (env TOCSIN_STORE).")
    var store: String? = Environment.get("TOCSIN_STORE")

    @Option(name: .customLong("log-level"), help: "The processes' log level (their logs go to stderr).")
    var logLevel = "notice"

    @Option(help: "Most clients the controller sends to one broker (the brokers' --capacity).")
    var capacity: Int?

    @Flag(name: .customLong("enable-chaos"), help: "Serve the chaos API (admin scope): list, kill and pause the processes.")
    var enableChaos = false

    @Option(name: .customLong("chaos-port"), help: "The chaos API's port (default: --port minus 1; 0 with --port 0).")
    var chaosPort: Int?

    /// Given to every broker.
    @OptionGroup var tracing: TracingOptions

    func validate() throws {
        if let chaosPort, !(0...65535).contains(chaosPort) { throw ValidationError("--chaos-port must be in 0...65535") }
        if let capacity, !(1...10_000_000).contains(capacity) { throw ValidationError("--capacity must be in 1...10000000") }
        if let store {
            do {
                _ = try PostgresLocation(parsing: store)
            } catch {
                throw ValidationError("--store (or TOCSIN_STORE): \(error.message)")
            }
        }
    }

    /// A network of these processes (the caller sets the counts, ports and host).
    func configuration() -> LocalNetwork.Configuration {
        var configuration = LocalNetwork.Configuration(directory: dataDirectory)
        configuration.executable = ChildProcess.currentExecutable
        configuration.logLevel = logLevel
        configuration.showLogs = true
        configuration.store = store
        if let capacity { configuration.brokerArguments += ["--capacity", "\(capacity)"] }
        configuration.brokerArguments += tracing.arguments
        return configuration
    }

    /// Where the chaos API listens, when enabled: `--chaos-port`, else the main port minus one.
    func chaos(host: String, port: Int) -> (host: String, port: Int)? {
        enableChaos ? (host, chaosPort ?? (port == 0 ? 0 : port - 1)) : nil
    }
}

/// `--autoscale` and its policy (`tocsin dev`).
struct AutoscaleOptions: ParsableArguments {
    @Flag(help: "Add brokers when load stays above --scale-out-above of capacity, drain and stop them when it stays below --scale-in-below.")
    var autoscale = false

    @Option(name: .customLong("min-brokers"), help: "With --autoscale: never fewer.")
    var minimum = 1

    @Option(name: .customLong("max-brokers"), help: "With --autoscale: never more.")
    var maximum = 8

    @Option(name: .customLong("scale-out-above"), help: "Utilization (clients / capacity, 0...1) above which a broker is added.")
    var scaleOutAbove = 0.8

    @Option(name: .customLong("scale-in-below"), help: "Utilization below which the least loaded broker is drained and stopped.")
    var scaleInBelow = 0.3

    @Option(name: .customLong("scale-sustain"), help: "Seconds the utilization must stay past a threshold.")
    var sustain = 3.0

    @Option(name: .customLong("scale-cooldown"), help: "Seconds between two changes.")
    var cooldown = 15.0

    @Option(name: .customLong("deliveries-per-broker"), help: "Deliveries a second one broker is sized for (0: clients alone decide).")
    var deliveriesPerBroker = 0.0

    func policy() throws -> Autoscaler.Policy {
        var p = Autoscaler.Policy()
        p.minimum = minimum
        p.maximum = maximum
        p.scaleOutAbove = scaleOutAbove
        p.scaleInBelow = scaleInBelow
        p.deliveriesPerBroker = deliveriesPerBroker
        p.sustain = try seconds(sustain, flag: "--scale-sustain", range: 0...3600)
        p.cooldown = try seconds(cooldown, flag: "--scale-cooldown", range: 0...86_400)
        do {
            return try p.validated()
        } catch {
            throw ValidationError(error.message)
        }
    }
}

/// Waits for SIGINT or SIGTERM.
enum TerminationSignal {
    static func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = OnceFlag()
            var sources: [any DispatchSourceSignal] = []
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler {
                    if once.claim() { continuation.resume() }
                }
                source.resume()
                sources.append(source)
            }
            Retained.sources = sources
        }
    }

    /// Keeps the signal sources alive for the process's life.
    private enum Retained {
        nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []
    }
}

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false
    func claim() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if claimed { return false }
        claimed = true
        return true
    }
}

/// `tocsin status`: the network as a table.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the broker network: brokers, state, load, clients.")

    @Option(help: "Any node of the network: the controller or a broker (env TOCSIN_URL).")
    var url: String = Environment.get("TOCSIN_URL") ?? "http://127.0.0.1:7300"

    @Option(name: .long, help: "A token with the discovery scope, when the network requires one (env TOCSIN_TOKEN).")
    var token: String? = Environment.get("TOCSIN_TOKEN")

    @OptionGroup var tls: ClientTLSOptions

    func run() async throws {
        let base = BaseURL.trimmed(url)
        let view: ClusterView
        let token = self.token
        do {
            var client = ControllerClient(url: base, httpClient: HTTPCall.shared(trusting: try tls.trust()))
            client.token = token.map { token in { @Sendable in token } }
            view = try await client.cluster()
        } catch let failure as TransportFailure where failure.kind == .refused {
            throw CommandFailure(
                failure.sentence(role: "a controller or broker", runBy: "`tocsin controller`")
                    + " For a standalone broker (`tocsin serve`), give its URL: --url http://127.0.0.1:7400 by default.")
        } catch let failure as TransportFailure {
            throw CommandFailure(failure.sentence(role: "a controller or broker"))
        }
        if let controller = view.controller {
            print("controller: \(controller)")
            // Several controllers on one database: say who leads (one alone is always epoch 0).
            if let epoch = view.epoch, epoch > 0 {
                print("leader: \(view.leader ?? "none right now (an election is under way)") (epoch \(epoch))")
            }
        } else {
            // A standalone broker (`tocsin serve`) answers with itself and no controller.
            let which = view.brokers.count == 1 ? "broker \(view.brokers[0].id)" : "a broker"
            print(
                "\(base) is \(which) running standalone (`tocsin serve`): no controller, no other brokers; "
                    + "its clients connect to it directly.")
        }
        let header = ["BROKER", "STATE", "REGION", "CLIENTS", "CAPACITY", "SUBSCRIPTIONS", "DELIVERIES/S", "PUBLISHES/S", "CPU", "WEBSOCKET"]
        var rows = [header]
        for b in view.brokers.sorted(by: { $0.id < $1.id }) {
            rows.append([
                b.id, b.state.rawValue, b.region, "\(b.load.connections)", "\(b.capacity)", "\(b.load.subscriptions)",
                String(format: "%.0f", b.load.deliveriesPerSecond), String(format: "%.0f", b.load.publishesPerSecond),
                String(format: "%.0f%%", b.load.cpu * 100), b.webSocketURL,
            ])
        }
        printTable(rows)
        let total = view.brokers.reduce(0) { $0 + $1.load.connections }
        print("\(view.brokers.count) broker(s), \(total) client(s)")
        // With an admin token, every component with its version and the configuration it runs.
        guard view.controller != nil, let components = try? await componentList(view.controller ?? base, token: token) else { return }
        print("")
        rows = [["COMPONENT", "ROLE", "STATE", "VERSION", "CONFIG", "STARTED", "INCARNATION"]]
        for c in components {
            rows.append([
                c.id, c.role.rawValue, c.state, c.version, c.configVersion.map { "v\($0)" } ?? "-",
                c.startedAtMillis.map(TimeFormat.format) ?? "-", String(c.incarnation.prefix(12)),
            ])
        }
        printTable(rows)
    }

    private func componentList(_ url: String, token: String?) async throws -> [ComponentSummary] {
        var client = ControllerClient(url: url, httpClient: HTTPCall.shared(trusting: try tls.trust()))
        client.token = token.map { token in { @Sendable in token } }
        return try await client.components(timeout: .seconds(5))
    }

    private func printTable(_ rows: [[String]]) {
        let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        for row in rows {
            print(row.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}
