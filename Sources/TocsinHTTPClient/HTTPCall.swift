public import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import Synchronization
public import TocsinCore

/// JSON over HTTP to a broker's API (docs/protocol.md, "HTTP API").
public enum HTTPCall {
    /// An answer as it came: any status, its JSON body.
    public struct Reply: Sendable {
        /// The HTTP status code.
        public var status: Int
        /// The body, parsed (`null` when it was empty).
        public var body: JSONValue
        /// The response's headers by lowercased name (a repeated one: its values joined with ", ").
        public var headers: [String: String] = [:]
    }

    /// The methods the API uses.
    public enum Method: String, Sendable {
        case GET, PUT, POST, DELETE
    }

    /// The process's HTTP client, for calls that have no client of their own (it lives as long
    /// as the process). `ControllerClient` makes and shuts down its own.
    public static let shared: HTTPClient = makeClient()

    /// A new HTTP client configured for Tocsin nodes. Unlike `HTTPClient.shared` it fails a
    /// request at once when the peer refuses the connection, instead of retrying until the
    /// deadline: a dead broker must cost a client milliseconds, not its whole timeout, to skip.
    /// The caller shuts it down.
    /// `https://` peers are verified against `trust`.
    public static func makeClient(trust: TLSTrust = .system) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(2)
        // A Tocsin node closes a kept-alive connection idle for 10 s (`HTTPEdgeLimits.headTimeout`):
        // a request sent on it just then would be lost with it. Never reuse one idle that long.
        configuration.connectionPool.idleTimeout = .seconds(5)
        configuration.tlsConfiguration = trust.clientConfiguration
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The process's HTTP client for `https://` peers verified against `trust` (`shared` for the
    /// system's CAs): one per trust, living as long as the process.
    public static func shared(trusting trust: TLSTrust) -> HTTPClient {
        if trust == .system { return shared }
        // Making a client opens nothing (its connections come with its first request).
        return clientsByTrust.withLock { clients in
            if let client = clients[trust] { return client }
            let client = makeClient(trust: trust)
            clients[trust] = client
            return client
        }
    }

    private static let clientsByTrust = Mutex<[TLSTrust: HTTPClient]>([:])

    /// Sends a request and returns the status and the JSON body, whatever the status. A failure
    /// to get an answer (refused, timed out, unknown host, TLS, a bad URL) is thrown as a
    /// `TransportFailure`, whose description is a sentence for the user.
    public static func send(
        _ method: Method, _ url: String, rawBody: String? = nil, headers: [(String, String)] = [], timeout: Duration = .seconds(30),
        using client: HTTPClient = shared
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method.rawValue)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let rawBody {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: rawBody))
        }
        let millis = max(1, timeout.milliseconds)
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await client.execute(request, timeout: .milliseconds(millis))
            bytes = try await response.body.collect(upTo: 64 << 20)
        } catch {
            throw TransportFailure.from(error, url: url, timeout: timeout) ?? error
        }
        let body: JSONValue
        do {
            body = bytes.readableBytes == 0 ? JSONValue.null : try JSONValue.parse(bytes.readableBytesView)
        } catch {
            let origin = TransportFailure.origin(of: url)
            let status = response.status.code
            throw TocsinError(.badJSON, "\(origin) answered HTTP \(status) with something that is not JSON; is it a Tocsin node?")
        }
        var headers: [String: String] = [:]
        for header in response.headers {
            let name = header.name.lowercased()
            headers[name] = headers[name].map { $0 + ", " + header.value } ?? header.value
        }
        return Reply(status: Int(response.status.code), body: body, headers: headers)
    }

    /// A GET whose answer is text (`/metrics`): the body when the status is 2xx.
    public static func text(_ url: String, timeout: Duration = .seconds(30), using client: HTTPClient = shared) async throws -> String {
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await client.execute(HTTPClientRequest(url: url), timeout: .milliseconds(max(1, timeout.milliseconds)))
            bytes = try await response.body.collect(upTo: 64 << 20)
        } catch {
            throw TransportFailure.from(error, url: url, timeout: timeout) ?? error
        }
        guard (200..<300).contains(response.status.code) else {
            throw TocsinError(.unavailable, "\(TransportFailure.origin(of: url)) answered HTTP \(response.status.code)")
        }
        return String(buffer: bytes)
    }

    /// Sends a request; a non-2xx reply throws its `{"error": {code, message}}` as a `TocsinError`.
    public static func call(
        _ method: Method, _ url: String, body: JSONValue? = nil, headers: [(String, String)] = [], timeout: Duration = .seconds(30),
        using client: HTTPClient = shared
    ) async throws -> JSONValue {
        try checked(try await send(method, url, rawBody: body?.serialized, headers: headers, timeout: timeout, using: client), url: url)
    }

    /// A reply's body when its status is 2xx; otherwise its `{"error": {code, message}}` thrown as a `TocsinError`.
    public static func checked(_ reply: Reply, url: String) throws -> JSONValue {
        guard (200..<300).contains(reply.status) else {
            if let code = reply.body["error"]?["code"]?.stringValue, let message = reply.body["error"]?["message"]?.stringValue {
                throw TocsinError(
                    .init(rawValue: code), message, leader: reply.body["error"]?["leader"]?.stringValue,
                    retryAfterMillis: reply.body["error"]?["retryAfterMs"]?.intValue)
            }
            throw TocsinError(
                .internalError,
                "\(url) answered HTTP \(reply.status) without a Tocsin error; is it a Tocsin node, and is the URL http://HOST:PORT?")
        }
        return reply.body
    }
}
