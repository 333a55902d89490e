import Foundation
import Hummingbird
import Logging
import Metrics
import Synchronization
import TocsinCore
import TocsinDev
import TocsinHTTP

/// The chaos API (`tocsin dev --enable-chaos`, docs/operations.md "Breaking it on purpose"),
/// served by the supervisor that owns the processes: list them, kill one (named, random, or
/// the leading controller), or pause one for a while. Every action is logged, counted
/// (`tocsin_chaos_actions_total{action}`) and kept for `GET /v1/chaos`. Scope `admin`.
final class ChaosServer: Sendable {
    let network: LocalNetwork
    /// The leading controller's URL, from the discovery list.
    let leader: @Sendable () async -> String?
    let logger: Logger
    private let log = Mutex<[JSONValue]>([])
    static let kept = 200

    init(network: LocalNetwork, leader: @escaping @Sendable () async -> String?, logger: Logger) {
        self.network = network
        self.leader = leader
        self.logger = logger
    }

    /// Runs the API on `host:port` until cancelled; `onListening` hears the bound port.
    func run(host: String, port: Int, authentication: Authentication, onListening: @escaping @Sendable (Int) async -> Void) async throws {
        let router = Router(context: BasicRequestContext.self)
        let access = HTTPAccess(authentication: authentication, nowMillis: { Int64(Date().timeIntervalSince1970 * 1000) })
        let routes = GuardedRoutes(router: router, access: access, logger: logger)
        routes.open(.get, "/healthz") { _, _ in Response.json(#"{"status":"ok"}"#) }
        routes.on(.get, "/v1/workers", .admin) { _, _, _ in
            .json(JSONValue.object(["workers": .array(self.network.workers.map(Self.json))]))
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
        try await app.runService()
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
        let running = network.workers.filter { $0.state == "running" }
        let worker: LocalNetwork.Worker
        switch target {
        case "random":
            guard let w = running.randomElement() else { throw TocsinError(.unavailable, "no worker is running") }
            worker = w
        case "random-broker":
            guard let w = running.filter({ $0.role == "broker" }).randomElement() else { throw TocsinError(.unavailable, "no broker is running") }
            worker = w
        case "leader":
            guard let url = await leader(), let w = running.first(where: { $0.role == "controller" && $0.url == url }) else {
                throw TocsinError(.unavailable, "no leading controller is known right now")
            }
            worker = w
        default:
            guard let w = network.workers.first(where: { $0.id == target }) else {
                throw TocsinError(.notFound, "no worker \(target.prefix(80)) (GET /v1/workers lists them)")
            }
            guard w.state == "running" else { throw TocsinError(.conflict, "\(w.id) is \(w.state), not running") }
            worker = w
        }
        let at = Int64(Date().timeIntervalSince1970 * 1000)
        var entry: [String: JSONValue] = [
            "action": .string(action), "worker": Self.json(worker), "by": .string(by), "at": .string(TimeFormat.format(at)),
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
            await network.kill(worker.id)
        } else {
            let network = network
            Task { await network.pause(worker.id, for: .seconds(seconds)) }
        }
        return .object(entry)
    }

    static func json(_ w: LocalNetwork.Worker) -> JSONValue {
        .object([
            "role": .string(w.role), "id": .string(w.id), "pid": .int(Int64(w.pid)), "url": .string(w.url), "incarnation": .int(Int64(w.incarnation)),
            "state": .string(w.state),
        ])
    }
}
