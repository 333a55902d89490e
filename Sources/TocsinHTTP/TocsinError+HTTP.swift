package import HTTPTypes
package import Hummingbird
package import Logging
package import TocsinCore

extension TocsinError.Code {
    /// The one place error codes map to HTTP statuses (broker and controller alike).
    package var httpStatus: HTTPResponse.Status {
        switch self {
        case .badJSON, .badRequest, .unknownMessage, .notIdentified: .badRequest
        case .schemaViolation, .invalidStream, .invalidChannel, .invalidDataset, .invalidParams, .invalidRegistration, .tooManySubscriptions, .invalidSetting, .invalidCommand:
            .unprocessableContent
        case .unknownStream, .unknownChannel, .unknownDataset, .unknownSubscription, .notFound, .unknownBroker, .unknownComponent: .notFound
        case .tooLarge: .contentTooLarge
        case .conflict, .brokerIDInUse, .staleIncarnation: .conflict
        case .methodNotAllowed: .methodNotAllowed
        case .unavailable, .noBrokerAvailable, .storeUnavailable: .serviceUnavailable
        case .storeFull: HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")
        case .timeout: .requestTimeout
        case .uriTooLong: .uriTooLong
        case .headersTooLarge: .requestHeaderFieldsTooLarge
        case .notImplemented: .notImplemented
        case .httpVersionNotSupported: HTTPResponse.Status(code: 505, reasonPhrase: "HTTP Version Not Supported")
        case .upgradeRequired: HTTPResponse.Status(code: 426, reasonPhrase: "Upgrade Required")
        case .notLeader: HTTPResponse.Status(code: 421, reasonPhrase: "Misdirected Request")
        case .unauthorized, .tokenExpired: .unauthorized
        case .forbidden: .forbidden
        case .rateLimited, .tooManyConnections: .tooManyRequests
        case .unsupportedMediaType: .unsupportedMediaType
        default: .internalServerError
        }
    }
}

extension TocsinError {
    /// Any error as a TocsinError; unexpected ones become `internal`.
    package static func from(_ error: any Error) -> TocsinError {
        (error as? TocsinError) ?? TocsinError(.internalError, "unexpected failure: \(error)")
    }

    /// `{"error": {"code": "...", "message": "..."}}`: the body of `response`.
    package var jsonBody: String {
        var error: [String: JSONValue] = ["code": .string(code.rawValue), "message": .string(message)]
        if let leader { error["leader"] = .string(leader) }
        if let retryAfterMillis { error["retryAfterMs"] = .int(retryAfterMillis) }
        return JSONValue.object(["error": .object(error)]).serialized
    }

    /// `jsonBody` with the code's status.
    package var response: Response {
        var response = Response.json(jsonBody, status: code.httpStatus)
        if let leader, let name = HTTPField.Name("Tocsin-Leader") { response.headers[name] = leader }
        // Retryable by nature: say when (the store's outage or failover takes seconds).
        if code == .storeUnavailable { response.headers[.retryAfter] = "1" }
        if let retryAfterMillis { response.headers[.retryAfter] = String(max(1, (retryAfterMillis + 999) / 1000)) }
        if code == .unauthorized || code == .tokenExpired {
            response.headers[.wwwAuthenticate] = code == .tokenExpired ? #"Bearer error="invalid_token", error_description="expired""# : "Bearer"
        }
        return response
    }
}

extension Response {
    package static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    package static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        json(value.serialized, status: status)
    }
}

extension Request {
    /// The body as JSON, at most `limit` bytes: `too_large`, or `bad_json` when empty or malformed.
    package func jsonBody(limit: Int) async throws(TocsinError) -> JSONValue {
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: limit)
        } catch {
            throw TocsinError(.tooLarge, "the request body exceeds \(limit) bytes")
        }
        guard buffer.readableBytes > 0 else {
            throw TocsinError(.badJSON, "the request body is empty; expected JSON")
        }
        return try JSONValue.parse(buffer.readableBytesView)
    }

    /// An integer query parameter in `range`, or `value` when absent.
    package func intQuery(_ name: String, default value: Int64, range: ClosedRange<Int64>) throws(TocsinError) -> Int64 {
        guard let text = uri.queryParameters.get(name) else { return value }
        guard let n = Int64(text), range.contains(n) else {
            throw TocsinError(.badRequest, "query parameter '\(name)' must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
        }
        return n
    }

    /// A finite number query parameter in `range`, or nil when absent.
    package func doubleQuery(_ name: String, range: ClosedRange<Double>) throws(TocsinError) -> Double? {
        guard let text = uri.queryParameters.get(name) else { return nil }
        guard let d = Double(text), d.isFinite, range.contains(d) else {
            throw TocsinError(.badRequest, "query parameter '\(name)' must be a number in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
        }
        return d
    }
}

/// Runs a route handler, turning every error into the JSON error body; unexpected failures are logged.
package func respond(logger: Logger, _ body: () async throws -> Response) async -> Response {
    do {
        return try await body()
    } catch {
        let error = TocsinError.from(error)
        if error.code == .internalError {
            logger.error("request failed", metadata: ["error": "\(error.message)"])
        }
        return error.response
    }
}
