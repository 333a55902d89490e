public import TocsinClient
public import TocsinCore

/// `GET url` on a connection of its own (an HTTP client made for this call and shut down after),
/// verified against `trust`: what a TLS test uses to see the certificate a new connection gets.
public func getOnNewConnection(_ url: String, trusting trust: TLSTrust, timeout: Duration = .seconds(10)) async throws -> JSONValue {
    let client = HTTPCall.makeClient(trust: trust)
    let result: Result<JSONValue, any Error>
    do {
        result = .success(try await HTTPCall.call(.GET, url, timeout: timeout, using: client))
    } catch {
        result = .failure(error)
    }
    try? await client.shutdown()
    return try result.get()
}

/// The `TransportFailure` `body` throws; nil when it succeeds or throws something else.
public func transportFailure(_ body: () async throws -> Void) async -> TransportFailure? {
    do {
        try await body()
        return nil
    } catch {
        return error as? TransportFailure
    }
}
