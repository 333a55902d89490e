import Foundation
import TocsinDev

/// The broker a latency or throughput benchmark measures: one already running, or a fresh
/// `tocsin serve` spawned for the run (whose CPU, context switches and memory it then reports).
public enum BenchTarget: Sendable {
    /// A running broker's plain `http://` URL.
    case url(String)
    /// `executable serve` on a free port in a temporary directory, with `--no-fsync` if asked.
    case spawn(executable: String, noFsync: Bool)
}

/// A broker under measurement for the duration of a benchmark: its WebSocket address and, when
/// spawned here, its process.
struct MeasuredBroker: Sendable {
    let host: String
    let port: Int
    let webSocketURL: String
    let process: ChildProcess?
    private let directory: String?

    var pid: Int32? { process?.pid }

    /// Spawns or names the broker; `progress` gets "spawned … (pid …) on port …".
    static func start(_ target: BenchTarget, progress: @Sendable (String) -> Void) async throws -> MeasuredBroker {
        switch target {
        case .url(let url):
            guard url.hasPrefix("http://"), let components = URLComponents(string: url), let host = components.host else {
                throw BenchError("the broker's URL must be a plain http:// URL (the bench does not speak TLS), not \(url)")
            }
            let webSocketURL = url.replacingOccurrences(of: "http://", with: "ws://") + "/v1/ws"
            return MeasuredBroker(host: host, port: components.port ?? 80, webSocketURL: webSocketURL, process: nil, directory: nil)
        case .spawn(let executable, let noFsync):
            let directory = NSTemporaryDirectory() + "tocsin-bench-\(UUID().uuidString)"
            let process = try await ChildProcess(
                executable: executable,
                arguments: ["serve", "--port", "0", "--data-dir", directory, "--log-level", "warning"] + (noFsync ? ["--no-fsync"] : []))
            progress("spawned \(executable) serve (pid \(process.pid)) on port \(process.port)\(noFsync ? " with --no-fsync" : "")")
            return MeasuredBroker(
                host: "127.0.0.1", port: process.port, webSocketURL: "ws://127.0.0.1:\(process.port)/v1/ws", process: process,
                directory: directory)
        }
    }

    /// Runs `body` against the broker, stopping it afterwards if it was spawned.
    static func with<T>(
        _ target: BenchTarget, progress: @Sendable (String) -> Void, _ body: (MeasuredBroker) async throws -> T
    ) async throws -> T {
        let broker = try await start(target, progress: progress)
        defer { broker.stop() }
        return try await body(broker)
    }

    /// Stops a spawned broker and removes its directory.
    func stop() {
        process?.kill(SIGTERM)
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
    }
}

/// A benchmark that could not run as configured, in words.
public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
