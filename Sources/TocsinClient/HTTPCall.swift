import AsyncHTTPClient
import NIOCore
import NIOHTTP1
public import TocsinCore

/// JSON over HTTP to a broker's API (docs/protocol.md, "HTTP API").
public enum HTTPCall {
    public struct Reply: Sendable {
        public var status: Int
        public var body: JSONValue
    }

    public enum Method: String, Sendable {
        case GET, PUT, POST, DELETE
    }

    /// Sends a request and returns the status and the JSON body, whatever the status.
    public static func send(_ method: Method, _ url: String, rawBody: String? = nil, timeout: Duration = .seconds(30)) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method.rawValue)
        if let rawBody {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: rawBody))
        }
        let seconds = Int64(timeout.components.seconds)
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(max(1, seconds)))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let body = bytes.readableBytes == 0 ? JSONValue.null : try JSONValue.parse(bytes.readableBytesView)
        return Reply(status: Int(response.status.code), body: body)
    }

    /// Sends a request; a non-2xx reply throws its `{"error": {code, message}}` as a `TocsinError`.
    public static func call(_ method: Method, _ url: String, body: JSONValue? = nil) async throws -> JSONValue {
        let reply = try await send(method, url, rawBody: body?.serialized)
        guard (200..<300).contains(reply.status) else {
            if let code = reply.body["error"]?["code"]?.stringValue, let message = reply.body["error"]?["message"]?.stringValue {
                throw TocsinError(.init(rawValue: code), message)
            }
            throw TocsinError(.internalError, "HTTP \(reply.status) from \(url)")
        }
        return reply.body
    }
}
