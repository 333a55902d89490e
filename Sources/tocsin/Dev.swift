import ArgumentParser
import Dispatch
import Foundation
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinAuth
import TocsinStore

/// `tocsin dev --brokers N`: a local network of separate processes in one command.
struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local broker network: a controller and N broker processes sharing one store (SQLite, or PostgreSQL with --store), supervised.",
        discussion: """
            The controller listens on --port, the brokers on the ports after it. A broker that crashes is
            restarted (a new incarnation) on its port; Ctrl-C stops everything. Try `tocsin status` beside it.
            """)

    @Option(help: "How many brokers.")
    var brokers = 3

    @Option(help: "The controller's port; brokers take the next ones.")
    var port = 7300

    @Option(name: .customLong("data-dir"), help: "Directory of the shared SQLite store.")
    var dataDirectory: String = Environment.get("TOCSIN_DATA_DIR") ?? "./tocsin-data"

    @Option(name: .customLong("store"), help: "A PostgreSQL connection string the brokers share instead of the SQLite file (env TOCSIN_STORE).")
    var store: String? = Environment.get("TOCSIN_STORE")

    @Flag(name: .customLong("no-fsync"), help: "Brokers commit with synchronous=NORMAL.")
    var noFsync = false

    @Option(name: .customLong("log-level"), help: "The processes' log level (their logs go to stderr).")
    var logLevel = "notice"

    @OptionGroup var auth: AuthOptions

    @Flag(
        name: .customLong("tls"),
        help: "Serve HTTPS/WSS with a throwaway CA made in --data-dir/tls (openssl), for localhost; clients need --tls-ca --data-dir/tls/ca.pem.")
    var tls = false

    mutating func validate() throws {
        guard (1...64).contains(brokers) else { throw ValidationError("--brokers must be in 1...64") }
        guard (1...(65535 - 64)).contains(port) else { throw ValidationError("--port must leave room for the brokers' ports") }
        if let store {
            do {
                _ = try PostgresLocation(parsing: store)
            } catch {
                throw ValidationError("--store (or TOCSIN_STORE): \(error.message)")
            }
        }
    }

    func run() async throws {
        var configuration = LocalNetwork.Configuration(directory: dataDirectory)
        configuration.executable = ChildProcess.currentExecutable
        configuration.brokers = brokers
        configuration.basePort = port
        configuration.logLevel = logLevel
        configuration.showLogs = true
        configuration.store = store
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
        let network = try await LocalNetwork(configuration: configuration)
        print("controller  \(network.controllerURL)   (discovery: \(network.controllerURL)/v1/cluster)")
        for m in network.members {
            print("\(m.id)    \(m.httpURL)   \(m.webSocketURL)   pid \(m.pid)")
        }
        if let certificates {
            print("TLS: a throwaway CA; clients trust it with --tls-ca \(certificates.caCertificate)")
        }
        if let authority { try await printAdminToken(authority) }
        print("data in \(store.map { _ in "the PostgreSQL database of --store" } ?? dataDirectory); Ctrl-C stops the network")
        fflushStdout()
        let supervisor = Task {
            await network.supervise { line in
                print("dev: " + line)
                fflushStdout()
            }
        }
        await TerminationSignal.wait()
        supervisor.cancel()
        print("dev: stopping")
        await network.stop()
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
