public import AsyncHTTPClient
import Foundation
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
public struct ControllerClient: Sendable {
    /// The controller's (or, for `cluster()`, any node's) base URL, without trailing slashes.
    public let url: String
    /// The HTTP client the calls go through (owned by this one only if made by `init(url:)`).
    public let httpClient: HTTPClient
    private let ownsHTTPClient: Bool

    /// A client with HTTP connections of its own; `shutdown()` closes them.
    public init(url: String) {
        self.url = BaseURL.trimmed(url)
        httpClient = HTTPCall.makeClient()
        ownsHTTPClient = true
    }

    /// A client using `httpClient`, which the caller owns (`shutdown()` leaves it open).
    public init(url: String, httpClient: HTTPClient) {
        self.url = BaseURL.trimmed(url)
        self.httpClient = httpClient
        ownsHTTPClient = false
    }

    /// A client for `url` sharing this one's HTTP connections (and owning none).
    public func at(_ url: String) -> ControllerClient {
        ControllerClient(url: url, httpClient: httpClient)
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
        try LeaseReply(json: try await call(.POST, "/v1/brokers", body: request.json, timeout: timeout))
    }

    /// `POST /v1/brokers/{id}/heartbeat`.
    public func heartbeat(id: String, incarnation: String, load: BrokerLoad, timeout: Duration = .seconds(30)) async throws -> LeaseReply {
        let body = JSONValue.object(["incarnation": .string(incarnation), "load": load.json])
        return try LeaseReply(json: try await call(.POST, "/v1/brokers/\(Self.escape(id))/heartbeat", body: body, timeout: timeout))
    }

    /// `POST /v1/brokers/{id}/drain`.
    public func drain(id: String, incarnation: String, timeout: Duration = .seconds(30)) async throws -> LeaseReply {
        let body = JSONValue.object(["incarnation": .string(incarnation)])
        return try LeaseReply(json: try await call(.POST, "/v1/brokers/\(Self.escape(id))/drain", body: body, timeout: timeout))
    }

    /// `DELETE /v1/brokers/{id}?incarnation=…`.
    public func deregister(id: String, incarnation: String, timeout: Duration = .seconds(30)) async throws {
        _ = try await call(.DELETE, "/v1/brokers/\(Self.escape(id))?incarnation=\(Self.escape(incarnation))", timeout: timeout)
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

    private func call(_ method: HTTPCall.Method, _ path: String, body: JSONValue? = nil, timeout: Duration) async throws -> JSONValue {
        try await HTTPCall.call(method, BaseURL.join(url, path), body: body, timeout: timeout, using: httpClient)
    }
}
