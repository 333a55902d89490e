#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    /// Most connections open at once; one more is answered `503 unavailable` and closed at once.
    /// nil: the process's descriptor limit less `descriptorReserve`, so the server sheds
    /// connections instead of running out of descriptors (where accepting would fail and spin).
    public var maxConnections: Int? = nil

    /// Descriptors kept for everything but client connections (the store, logs, pipes, the
    /// event loops' own) when `maxConnections` is derived from the descriptor limit.
    public static let descriptorReserve = 64

    /// `maxConnections`, or the descriptor limit less the reserve (at least 16).
    public var connectionLimit: Int {
        if let maxConnections { return maxConnections }
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return Int(Int32.max) }
        return max(16, Int(clamping: limit.rlim_cur) - Self.descriptorReserve)
    }

    public init() {}
}
