import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TocsinCore

/// Small helpers for the client commands' HTTP calls.
enum HTTP {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func call(_ method: HTTPMethod, _ url: String, body: String? = nil) async throws -> JSONValue {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        } catch {
            throw Failure(description: "cannot reach \(url): \(error)")
        }
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let json = bytes.readableBytes == 0 ? JSONValue.null : try JSONValue.parse(bytes.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            if let code = json["error"]?["code"]?.stringValue, let message = json["error"]?["message"]?.stringValue {
                throw Failure(description: "\(code): \(message)")
            }
            throw Failure(description: "HTTP \(response.status.code) from \(url)")
        }
        return json
    }
}
