public import AsyncHTTPClient
import Foundation
import Synchronization
public import TocsinCore

/// The controller's API (docs/protocol.md, "Cluster API") as typed calls: brokers register,
/// renew and leave; clients and the CLI read the discovery list and ask `assign`. Every URL of
/// that API is built here.
///
/// A client made with `init(url:)` owns its HTTP connections: call `shutdown()` when done, or use
/// `withClient(url:_:)`, which does it on every exit path. One made with `init(url:httpClient:)`
/// uses the given client, which its owner shuts down.
///
/// A non-2xx answer is thrown as the `TocsinError` it carries; no answer at all as a
/// `TransportFailure` (as `HTTPCall.call` does).
///
/// With several controllers (`init(urls:)`) a call goes to the one that answered last; when it
/// cannot be reached or answers `not_leader`, the call goes on to the leader it names (if not
/// tried yet), then to the other URLs in order, and the one that answers is kept for next time.
/// Only when every one failed is the last failure thrown.
public struct ControllerClient: Sendable {
    /// The controller's (or, for `cluster()`, any node's) base URL that calls go to first,
    /// without trailing slashes: the one that answered last.
    public var url: String { preferred.url.withLock { $0 } }
    /// Every controller's base URL, as given.
    public let urls: [String]
    /// The HTTP client the calls go through (owned by this one only if made by `init(url:)`).
    public let httpClient: HTTPClient
    private let ownsHTTPClient: Bool
    private let preferred: Preferred
    /// The token every call carries (`Authorization: Bearer`): brokers give their cluster
    /// credential, clients one with the `discovery` scope. None when nil.
    public var token: TokenSource?
    /// When set (brokers of a network with authentication), every answer to a broker call must
    /// carry the controller's own cluster credential (`Tocsin-Cluster-Credential`), checked here:
    /// an answer without it (something else at the controller's address, or a man in the
    /// middle) is refused, and with it any migrate order it carries.
    public var controllerVerifier: (any TokenVerifier)?

    /// The URL that answered last, shared by copies of the client.
    private final class Preferred: Sendable {
        let url: Mutex<String>
        init(_ url: String) { self.url = Mutex(url) }
    }

    /// A client with HTTP connections of its own; `shutdown()` closes them.
    public init(url: String) {
        self.init(urls: [url])
    }

    /// A client of several controllers (at least one URL), with HTTP connections of its own;
    /// `https://` controllers are verified against `trust`.
    public init(urls: [String], trust: TLSTrust = .system) {
        self.init(urls: urls, httpClient: HTTPCall.makeClient(trust: trust), owns: true)
    }

    /// A client using `httpClient`, which the caller owns (`shutdown()` leaves it open).
    public init(url: String, httpClient: HTTPClient) {
        self.init(urls: [url], httpClient: httpClient, owns: false)
    }

    /// A client of several controllers using `httpClient`, which the caller owns.
    public init(urls: [String], httpClient: HTTPClient) {
        self.init(urls: urls, httpClient: httpClient, owns: false)
    }

    private init(urls: [String], httpClient: HTTPClient, owns: Bool) {
        precondition(!urls.isEmpty, "ControllerClient needs at least one URL")
        self.urls = urls.map(BaseURL.trimmed)
        self.httpClient = httpClient
        ownsHTTPClient = owns
        preferred = Preferred(self.urls[0])
    }

    /// A client for `url` sharing this one's HTTP connections (and owning none).
    public func at(_ url: String) -> ControllerClient {
        var client = ControllerClient(url: url, httpClient: httpClient)
        client.token = token
        client.controllerVerifier = controllerVerifier
        return client
    }

    /// Runs `body` with a client of its own, shut down when `body` returns or throws.
    public static func withClient<T: Sendable>(url: String, _ body: (ControllerClient) async throws -> T) async throws -> T {
        let client = ControllerClient(url: url)
        let result: Result<T, any Error>
        do {
            result = .success(try await body(client))
        } catch {
            result = .failure(error)
        }
        try? await client.shutdown()
        return try result.get()
    }

    /// Closes the HTTP connections if this client made them; call it once.
    public func shutdown() async throws {
        if ownsHTTPClient { try await httpClient.shutdown() }
    }

    // MARK: Brokers

    /// `POST /v1/brokers`.
    public func register(_ request: RegistrationRequest, timeout: Duration = .seconds(30)) async throws -> LeaseReply {
        try LeaseReply(json: try await call(.POST, "/v1/brokers", body: request.json, timeout: timeout, proven: true))
    }

    /// `POST /v1/brokers/{id}/heartbeat`.
    public func heartbeat(id: String, incarnation: String, load: BrokerLoad, timeout: Duration = .seconds(30)) async throws -> LeaseReply {
        try await heartbeat(id: id, incarnation: incarnation, report: HeartbeatReport(load: load), timeout: timeout)
    }

    /// `POST /v1/brokers/{id}/heartbeat` with everything a broker reports.
    public func heartbeat(id: String, incarnation: String, report: HeartbeatReport, timeout: Duration = .seconds(30)) async throws -> LeaseReply {
        let body = report.json(incarnation: incarnation)
        return try LeaseReply(json: try await call(.POST, "/v1/brokers/\(Self.escape(id))/heartbeat", body: body, timeout: timeout, proven: true))
    }

    /// `POST /v1/brokers/{id}/drain`.
    public func drain(id: String, incarnation: String, timeout: Duration = .seconds(30)) async throws -> LeaseReply {
        let body = JSONValue.object(["incarnation": .string(incarnation)])
        return try LeaseReply(json: try await call(.POST, "/v1/brokers/\(Self.escape(id))/drain", body: body, timeout: timeout, proven: true))
    }

    /// `DELETE /v1/brokers/{id}?incarnation=…`.
    public func deregister(id: String, incarnation: String, timeout: Duration = .seconds(30)) async throws {
        _ = try await call(.DELETE, "/v1/brokers/\(Self.escape(id))?incarnation=\(Self.escape(incarnation))", timeout: timeout)
    }

    // MARK: Operations (admin scope)

    /// `GET /v1/components`: every live controller and broker.
    public func components(timeout: Duration = .seconds(30)) async throws -> [ComponentSummary] {
        var list: [ComponentSummary] = []
        for c in try await call(.GET, "/v1/components", timeout: timeout)["components"]?.arrayValue ?? [] {
            list.append(try ComponentSummary(json: c))
        }
        return list
    }

    /// `GET /v1/config`: the version, every value set, and the live settings.
    public func config(timeout: Duration = .seconds(30)) async throws -> JSONValue {
        try await call(.GET, "/v1/config", timeout: timeout)
    }

    /// `GET /v1/config/history?limit=…`: the latest changes, newest first.
    public func configHistory(limit: Int, timeout: Duration = .seconds(30)) async throws -> [ConfigChange] {
        var list: [ConfigChange] = []
        for c in try await call(.GET, "/v1/config/history?limit=\(limit)", timeout: timeout)["changes"]?.arrayValue ?? [] {
            list.append(try ConfigChange(json: c))
        }
        return list
    }

    /// `PUT /v1/config/{key}?role=…|component=…` with `{"value": …}`; nil value: `DELETE` (unset).
    public func setConfig(_ key: String, to value: JSONValue?, in scope: ConfigScope, timeout: Duration = .seconds(30)) async throws -> JSONValue {
        let query: String
        switch scope {
        case .role(let r): query = "role=" + Self.escape(r.rawValue)
        case .component(let id): query = "component=" + Self.escape(id)
        }
        let path = "/v1/config/\(Self.escape(key))?\(query)"
        if let value { return try await call(.PUT, path, body: .object(["value": value]), timeout: timeout) }
        return try await call(.DELETE, path, timeout: timeout)
    }

    /// `POST /v1/commands`: records a command and returns it (targets pending).
    public func submitCommand(
        _ kind: CommandKind, args: JSONValue = .object([:]), target: CommandTarget, timeoutSeconds: Int, timeout: Duration = .seconds(30)
    ) async throws -> CommandRecord {
        let body = JSONValue.object([
            "kind": .string(kind.rawValue), "args": args, "target": target.json, "timeoutSeconds": .int(Int64(timeoutSeconds)),
        ])
        return try CommandRecord(json: try await call(.POST, "/v1/commands", body: body, timeout: timeout))
    }

    /// `GET /v1/commands/{id}`.
    public func command(_ id: String, timeout: Duration = .seconds(30)) async throws -> CommandRecord {
        try CommandRecord(json: try await call(.GET, "/v1/commands/\(Self.escape(id))", timeout: timeout))
    }

    /// `GET /v1/commands`: the latest commands, newest first.
    public func commands(timeout: Duration = .seconds(30)) async throws -> [CommandRecord] {
        var list: [CommandRecord] = []
        for c in try await call(.GET, "/v1/commands", timeout: timeout)["commands"]?.arrayValue ?? [] { list.append(try CommandRecord(json: c)) }
        return list
    }

    // MARK: Clients

    /// `GET /v1/cluster`: the discovery list (every broker serves it too).
    public func cluster(timeout: Duration = .seconds(30)) async throws -> ClusterView {
        try ClusterView(json: try await call(.GET, "/v1/cluster", timeout: timeout))
    }

    /// `GET /v1/assign?client=…`: the broker the client should use.
    public func assign(_ request: AssignmentRequest, timeout: Duration = .seconds(30)) async throws -> AssignReply {
        try AssignReply(json: try await call(.GET, "/v1/assign?" + Self.query(request), timeout: timeout))
    }

    /// The query string of an assignment request (`client`, `region`, `lat`/`lon`, `exclude`).
    static func query(_ request: AssignmentRequest) -> String {
        var query = "client=" + escape(request.clientID)
        if let region = request.region { query += "&region=" + escape(region) }
        if let location = request.location { query += "&lat=\(location.lat)&lon=\(location.lon)" }
        if !request.exclude.isEmpty { query += "&exclude=" + escape(request.exclude.sorted().joined(separator: ",")) }
        return query
    }

    /// `value` percent-encoded for a query value or a path segment.
    package static func escape(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: valueAllowed) ?? value
    }

    private static let valueAllowed: CharacterSet = {
        var set = CharacterSet.urlQueryAllowed
        set.remove(charactersIn: "&=+#/?")
        return set
    }()

    private func call(
        _ method: HTTPCall.Method, _ path: String, body: JSONValue? = nil, timeout: Duration, proven: Bool = false
    ) async throws -> JSONValue {
        var tried: [String] = []
        var next: String? = url
        var lastFailure: (any Error)?
        var headers: [(String, String)] = []
        if let token { headers.append(("Authorization", "Bearer " + (try await token()))) }
        while let base = next {
            tried.append(base)
            var named: String?
            do {
                let reply = try await HTTPCall.send(
                    method, BaseURL.join(base, path), rawBody: body?.serialized, headers: headers, timeout: timeout, using: httpClient)
                let answer = try HTTPCall.checked(reply, url: BaseURL.join(base, path))
                if proven, let verifier = controllerVerifier { try await Self.checkProof(reply, from: base, verifier: verifier) }
                preferred.url.withLock { $0 = base }
                return answer
            } catch let error as TocsinError where error.code == .notLeader {
                lastFailure = error
                named = error.leader.map(BaseURL.trimmed)
            } catch let error as TransportFailure {
                lastFailure = error
            } catch let error as TocsinError where error.code == .unauthorized && proven {
                lastFailure = error  // not the controller: try the others
            }
            next = Self.next(after: tried, named: named, urls: urls)
        }
        throw lastFailure ?? TocsinError(.unavailable, "no controller URL")
    }

    /// The header a controller proves itself with in answers to brokers.
    package static let proofHeader = "tocsin-cluster-credential"

    /// An answer to a broker call must carry a cluster credential the broker's keys verify.
    static func checkProof(_ reply: HTTPCall.Reply, from base: String, verifier: any TokenVerifier) async throws {
        guard let token = reply.headers[proofHeader] else {
            throw TocsinError(.unauthorized, "the answer from \(base) carries no controller credential: not our controller (or a man in the middle); refused with any orders in it")
        }
        let grant = try await verifier.verify(token, nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        guard grant.allows(.cluster) else {
            throw TocsinError(.unauthorized, "the answer from \(base) carries a credential without the cluster scope; refused with any orders in it")
        }
    }

    /// Where a call goes after `tried` failed: the leader a follower named, if not tried yet,
    /// else the first URL not tried; nil when none is left.
    package static func next(after tried: [String], named: String?, urls: [String]) -> String? {
        if let named, !tried.contains(named) { return named }
        return urls.first { !tried.contains($0) }
    }
}
