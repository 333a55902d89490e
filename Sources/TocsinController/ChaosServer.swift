import Foundation
import Hummingbird
public import Logging
import Metrics
import Synchronization
public import TocsinCore
import TocsinHTTP

/// The chaos API (`tocsin dev --enable-chaos`, docs/operations.md), served by the supervisor
/// that owns the processes: list them, kill one (named, random, or the leading controller), or
/// pause one for a while. Every action is logged, counted (`tocsin_chaos_actions_total{action}`)
/// and kept for `GET /v1/chaos`. Scope `admin`. The supervisor gives it its processes as
/// `ChaosServer.Workers`.
public final class ChaosServer: Sendable {
    /// What the supervisor lets the API see and do.
    public struct Workers: Sendable {
        public var list: @Sendable () -> [WorkerSummary]
        /// SIGKILL the worker (the supervisor restarts it).
        public var kill: @Sendable (_ id: String) async -> Void
        /// SIGSTOP it for the duration, then SIGCONT.
        public var pause: @Sendable (_ id: String, _ duration: Duration) async -> Void
        /// The leading controller's URL, from the discovery list.
        public var leader: @Sendable () async -> String?

        public init(
            list: @escaping @Sendable () -> [WorkerSummary], kill: @escaping @Sendable (String) async -> Void,
            pause: @escaping @Sendable (String, Duration) async -> Void, leader: @escaping @Sendable () async -> String?
        ) {
            self.list = list
            self.kill = kill
            self.pause = pause
            self.leader = leader
        }
    }

    let workers: Workers
    let logger: Logger
    private let log = Mutex<[JSONValue]>([])
    static let kept = 200

    public init(workers: Workers, logger: Logger) {
        self.workers = workers
        self.logger = logger
    }

    /// Runs the API on `host:port` until cancelled; `onListening` hears the bound port.
    public func run(host: String, port: Int, authentication: Authentication, onListening: @escaping @Sendable (Int) async -> Void) async throws {
        let router = Router(context: BasicRequestContext.self)
        let access = HTTPAccess(authentication: authentication, nowMillis: { Int64(Date().timeIntervalSince1970 * 1000) })
        let routes = GuardedRoutes(router: router, access: access, logger: logger)
        routes.open(.get, "/healthz") { _, _ in Response.json(#"{"status":"ok"}"#) }
        routes.on(.get, "/v1/workers", .admin) { _, _, _ in
            .json(JSONValue.object(["workers": .array(self.workers.list().map(\.json))]))
        }
        routes.on(.get, "/v1/chaos", .admin) { _, _, _ in
            .json(JSONValue.object(["actions": .array(self.log.withLock { Array($0.reversed()) })]))
        }
        routes.on(.post, "/v1/chaos", .admin) { request, _, grant in
            let body = try await request.jsonBody(limit: 4096)
            return .json(try await self.act(body, by: grant?.client ?? "anonymous"))
        }
        let app = Application(
            router: router, server: .guardedHTTP1(limits: HTTPEdgeLimits()),
            configuration: .init(address: .hostname(host, port: port), serverName: "tocsin-chaos"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) }, logger: logger)
        // The supervisor handles SIGTERM and SIGINT itself (and stops this with its task).
        try await app.runService(gracefulShutdownSignals: [])
    }

    /// `{"action": "kill"|"pause", "target": id|"random"|"random-broker"|"leader", "seconds": 1...300}`.
    func act(_ body: JSONValue, by: String) async throws(TocsinError) -> JSONValue {
        guard let action = body["action"]?.stringValue, ["kill", "pause"].contains(action) else {
            throw TocsinError(.badRequest, "'action' must be \"kill\" or \"pause\"")
        }
        guard let target = body["target"]?.stringValue else {
            throw TocsinError(.badRequest, "'target' must be a worker id, \"random\", \"random-broker\" or \"leader\"")
        }
        var seconds: Int64 = 0
        if action == "pause" {
            guard let s = (body["seconds"] ?? .int(5)).intValue, (1...300).contains(s) else {
                throw TocsinError(.badRequest, "'seconds' must be an integer in 1...300")
            }
            seconds = s
        }
        let all = workers.list()
        let running = all.filter { $0.state == "running" }
        let worker: WorkerSummary
        switch target {
        case "random":
            guard let w = running.randomElement() else { throw TocsinError(.unavailable, "no worker is running") }
            worker = w
        case "random-broker":
            guard let w = running.filter({ $0.role == "broker" }).randomElement() else { throw TocsinError(.unavailable, "no broker is running") }
            worker = w
        case "leader":
            guard let url = await workers.leader(), let w = running.first(where: { $0.role == "controller" && $0.url == url }) else {
                throw TocsinError(.unavailable, "no leading controller is known right now")
            }
            worker = w
        default:
            guard let w = all.first(where: { $0.id == target }) else {
                throw TocsinError(.notFound, "no worker \(target.prefix(80)) (GET /v1/workers lists them)")
            }
            guard w.state == "running" else { throw TocsinError(.conflict, "\(w.id) is \(w.state), not running") }
            worker = w
        }
        let at = Int64(Date().timeIntervalSince1970 * 1000)
        var entry: [String: JSONValue] = [
            "action": .string(action), "worker": worker.json, "by": .string(by), "at": .string(TimeFormat.format(at)),
        ]
        if action == "pause" { entry["seconds"] = .int(seconds) }
        logger.notice(
            "chaos", metadata: ["action": "\(action)", "worker": "\(worker.id)", "pid": "\(worker.pid)", "by": "\(by)", "seconds": "\(seconds)"])
        Counter(label: "tocsin_chaos_actions_total", dimensions: [("action", action)]).increment()
        log.withLock { l in
            l.append(.object(entry))
            if l.count > Self.kept { l.removeFirst(l.count - Self.kept) }
        }
        if action == "kill" {
            await workers.kill(worker.id)
        } else {
            let workers = workers
            Task { await workers.pause(worker.id, .seconds(seconds)) }
        }
        return .object(entry)
    }
}
