import Foundation
import TocsinDev

/// The broker(s) a latency or throughput benchmark measures: one already running, or fresh
/// `tocsin serve` processes spawned for the run (whose CPU, context switches and memory it then
/// reports, summed over them).
public enum BenchTarget: Sendable {
    /// A running broker's plain `http://` URL.
    case url(String)
    /// `executable serve` processes on free ports, as `Spawn` says.
    case spawn(Spawn)

    /// What to spawn for a run.
    public struct Spawn: Sendable {
        /// Where the spawned brokers keep their events.
        public enum Store: Sendable, Equatable {
            /// A SQLite file in a temporary directory (one broker only).
            case sqlite
            /// A throwaway PostgreSQL server started for the run, durable (fsync and
            /// synchronous_commit on), removed afterwards.
            case throwawayPostgres
            /// An existing PostgreSQL database (a `--store` connection string).
            case postgres(String)
        }

        /// The `tocsin` executable.
        public var executable: String
        /// Run the brokers with `--no-fsync` (SQLite only).
        public var noFsync: Bool
        /// How many brokers share the store (more than one needs PostgreSQL).
        public var brokers: Int
        public var store: Store
        /// Each broker in a network namespace of its own (`NetworkNamespaces`; root only), the
        /// throwaway PostgreSQL on the namespaces' bridge in this (the root) namespace, and the
        /// load generator here reaching the brokers over the veths.
        public var namespaces: Bool
        /// More `serve` options for every broker (`--fetch-cache-entries 0`).
        public var extraArguments: [String] = []

        public init(executable: String, noFsync: Bool = false, brokers: Int = 1, store: Store = .sqlite, namespaces: Bool = false) {
            (self.executable, self.noFsync, self.brokers, self.store, self.namespaces) = (executable, noFsync, brokers, store, namespaces)
        }

        /// Why this cannot run, in words (nil: it can).
        public var problem: String? {
            if !(1...NetworkNamespaces.maximumCount).contains(brokers) {
                return "the number of brokers must be in 1...\(NetworkNamespaces.maximumCount), got \(brokers)"
            }
            if store == .sqlite, brokers > 1 { return "more than one broker needs a PostgreSQL store (--postgres or --store)" }
            if store != .sqlite, noFsync { return "--no-fsync is SQLite's; a PostgreSQL store commits as its server is configured" }
            if namespaces, store != .throwawayPostgres {
                return "--namespaces runs a throwaway PostgreSQL on the namespaces' bridge: use it with --postgres"
            }
            if namespaces, getuid() != 0 { return "--namespaces needs root (ip netns, ip link); this process runs as uid \(getuid())" }
            return nil
        }
    }
}

/// The brokers under measurement for the duration of a benchmark: their WebSocket addresses and,
/// when spawned here, their processes (and the PostgreSQL server and namespaces spawned with them).
struct MeasuredBrokers: Sendable {
    /// One broker's address.
    struct Endpoint: Sendable {
        let host: String
        let port: Int
        var webSocketURL: String { "ws://\(host):\(port)/v1/ws" }
        var description: String { "\(host):\(port)" }
    }

    let endpoints: [Endpoint]
    let processes: [ChildProcess]
    private let directory: String?
    private let server: PostgresServer?
    private let namespaces: NetworkNamespaces?

    /// The spawned brokers' figures, summed (nil for a broker given by URL).
    var figures: ProcessGroupFigures? { processes.isEmpty ? nil : ProcessGroupFigures(pids: processes.map(\.pid)) }

    /// The throwaway PostgreSQL server's processes (nil without one).
    var database: ProcessTreeCPU? { server?.postmasterPID.map(ProcessTreeCPU.init(root:)) }

    /// Spawns or names the brokers; `progress` gets a line for each thing spawned.
    static func start(_ target: BenchTarget, progress: @Sendable (String) -> Void) async throws -> MeasuredBrokers {
        switch target {
        case .url(let url):
            guard url.hasPrefix("http://"), let components = URLComponents(string: url), let host = components.host else {
                throw BenchError("the broker's URL must be a plain http:// URL (the bench does not speak TLS), not \(url)")
            }
            return MeasuredBrokers(
                endpoints: [Endpoint(host: host, port: components.port ?? 80)], processes: [], directory: nil, server: nil, namespaces: nil)
        case .spawn(let spawn):
            if let problem = spawn.problem { throw BenchError(problem) }
            return try await start(spawn, progress: progress)
        }
    }

    private static func start(_ spawn: BenchTarget.Spawn, progress: @Sendable (String) -> Void) async throws -> MeasuredBrokers {
        let directory = NSTemporaryDirectory() + "tocsin-bench-\(UUID().uuidString)"
        var namespaces: NetworkNamespaces?
        var database: PostgresServer?
        var processes: [ChildProcess] = []
        do {
            if spawn.namespaces {
                namespaces = try NetworkNamespaces.create(count: spawn.brokers)
                progress("network namespaces \(namespaces!.hosts.map { "\($0.name) (\($0.address))" }.joined(separator: ", ")) on bridge \(namespaces!.bridge) (\(namespaces!.bridgeAddress))")
            }
            let store: String?
            switch spawn.store {
            case .sqlite: store = nil
            case .postgres(let url): store = url
            case .throwawayPostgres:
                let server = try await PostgresServer.start(
                    durable: true, settings: ["fsync=on", "synchronous_commit=on"],
                    listenAddresses: ["127.0.0.1"] + (namespaces.map { [$0.bridgeAddress] } ?? []), trusting: namespaces.map { [$0.subnet] } ?? [])
                database = server
                store = server.url(host: namespaces?.bridgeAddress ?? "127.0.0.1")
                progress("started a durable throwaway PostgreSQL (fsync on, synchronous_commit on) on port \(server.port) in \(server.directory)")
            }
            var endpoints: [Endpoint] = []
            // One after the other: the first creates the schema and the example stream and channels.
            for i in 0..<spawn.brokers {
                let host = namespaces?.hosts[i]
                let address = host?.address ?? "127.0.0.1"
                let arguments =
                    [
                        "serve", "--insecure-no-auth", "--host", address, "--port", "0", "--data-dir", "\(directory)/\(i + 1)", "--broker-id", "broker-\(i + 1)",
                        "--log-level", "warning",
                    ] + (store.map { ["--store", $0] } ?? []) + (spawn.noFsync ? ["--no-fsync"] : []) + spawn.extraArguments
                let process: ChildProcess
                if let namespaces, let host {
                    process = try await namespaces.start(on: host, executable: spawn.executable, arguments: arguments)
                } else {
                    process = try await ChildProcess(executable: spawn.executable, arguments: arguments)
                }
                processes.append(process)
                endpoints.append(Endpoint(host: address, port: process.port))
                let place = host.map { " in namespace \($0.name)" } ?? ""
                let on = spawn.store == .sqlite ? (spawn.noFsync ? " with --no-fsync" : "") : " on PostgreSQL"
                progress("spawned \(spawn.executable) serve (pid \(process.pid))\(place) on \(address == "127.0.0.1" ? "port \(process.port)" : "\(address):\(process.port)")\(on)")
            }
            return MeasuredBrokers(endpoints: endpoints, processes: processes, directory: directory, server: database, namespaces: namespaces)
        } catch {
            MeasuredBrokers(endpoints: [], processes: processes, directory: directory, server: database, namespaces: namespaces).stop()
            throw error
        }
    }

    /// Runs `body` against the brokers, stopping what was spawned afterwards.
    static func with<T>(
        _ target: BenchTarget, progress: @Sendable (String) -> Void, _ body: (MeasuredBrokers) async throws -> T
    ) async throws -> T {
        let brokers = try await start(target, progress: progress)
        defer { brokers.stop() }
        return try await body(brokers)
    }

    /// Stops the spawned brokers, then the namespaces and the PostgreSQL server, and removes the
    /// brokers' directory.
    func stop() {
        for process in processes { process.signal(SIGTERM) }
        for process in processes { process.waitForExit() }
        namespaces?.destroy()
        server?.destroy()
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
    }
}

/// A benchmark that could not run as configured, in words.
public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
