/// The limits and deadlines every HTTP connection to a broker or controller lives under
/// (docs/protocol.md, "Limits and timeouts"). Nothing a peer sends, or fails to send, holds a
/// connection open past them.
public struct HTTPEdgeLimits: Sendable, Equatable {
    /// A request's head (request line and headers) must have arrived whole within this, counted
    /// from the connection's start or from the end of the previous response: `408` otherwise.
    /// Also how long a kept-alive connection may sit idle between requests.
    public var headTimeout: Duration = .seconds(10)
    /// A request's body must have arrived whole within this of its head: `408` otherwise.
    public var bodyTimeout: Duration = .seconds(30)
    /// Longest request target (path and query): `414` past it.
    public var maxURIBytes = 8 << 10
    /// Most bytes of a request's head, request line included: `431` past it.
    public var maxHeadBytes = 128 << 10
    /// Most header fields in one request: `431` past it.
    public var maxHeaderCount = 100

    public init() {}
}
