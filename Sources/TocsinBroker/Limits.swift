import Metrics
import Synchronization
public import TocsinCore

/// Rate limits and connection caps a broker applies per client: its token's client id (without
/// authentication there is no token to count against, and only the broker-wide caps apply).
/// docs/security.md says what each defends.
public struct RateLimits: Sendable, Hashable {
    /// Events published a second (a batch of 100 costs 100), HTTP and WebSocket together.
    public var publishEvents = RateLimiter.Limit(perSecond: 10_000, burst: 20_000)
    /// `subscribe` requests a second.
    public var subscribes = RateLimiter.Limit(perSecond: 50, burst: 500)
    /// WebSocket connections opened a second.
    public var connections = RateLimiter.Limit(perSecond: 10, burst: 50)
    /// WebSocket connections one client id may hold open at once (authentication on); 0: no cap.
    public var maxConnectionsPerClient = 32

    public init() {}
}

/// The broker's limiters: decisions under a lock, refusals thrown outside it.
final class Limits: Sendable {
    private struct State {
        var publishes: RateLimiter
        var subscribes: RateLimiter
        var connections: RateLimiter
        var open: [String: Int] = [:]
        var configuration: RateLimits
    }

    /// The limits in force (live configuration may change them: `retune`).
    var configuration: RateLimits { state.withLock { $0.configuration } }
    private let state: Mutex<State>
    private let nowMillis: @Sendable () -> Int64
    /// `tocsin_rate_limited_total{kind}`: requests refused by a limit, per kind.
    private let refusals: [Kind: Counter] = Dictionary(
        uniqueKeysWithValues: Kind.allCases.map { ($0, Counter(label: "tocsin_rate_limited_total", dimensions: [("kind", $0.rawValue)])) })

    init(_ configuration: RateLimits, nowMillis: @escaping @Sendable () -> Int64) {
        self.nowMillis = nowMillis
        state = Mutex(
            State(
                publishes: RateLimiter(configuration.publishEvents), subscribes: RateLimiter(configuration.subscribes),
                connections: RateLimiter(configuration.connections), configuration: configuration))
    }

    enum Kind: String, CaseIterable { case publish, subscribe, connection, connectionCap = "connection_cap" }

    /// Takes `cost` from the client's bucket of `kind`, or throws `rate_limited` with the wait.
    /// Without a client (no authentication) nothing is counted.
    func take(_ kind: Kind, key: String?, cost: Int = 1) throws(TocsinError) {
        guard let key else { return }
        let now = nowMillis()
        let decision = state.withLock { s -> TokenBucket.Decision in
            switch kind {
            case .publish: s.publishes.take(key, cost: Double(cost), now: now)
            case .subscribe: s.subscribes.take(key, cost: Double(cost), now: now)
            case .connection, .connectionCap: s.connections.take(key, cost: Double(cost), now: now)
            }
        }
        guard case .refused(let wait) = decision else { return }
        refusals[kind]?.increment()
        guard let wait else {
            throw TocsinError(.rateLimited, "a \(kind.rawValue) of \(cost) is more than the limit ever allows at once; split it")
        }
        throw TocsinError(.rateLimited, "too many \(kind.rawValue)s for '\(key)'; retry in \(wait) ms", retryAfterMillis: wait)
    }

    /// Counts an open connection of `client`; `too_many_connections` past the cap.
    func open(client: String) throws(TocsinError) {
        let (admitted, cap) = state.withLock { s -> (Bool, Int) in
            let cap = s.configuration.maxConnectionsPerClient
            let count = s.open[client, default: 0]
            guard cap <= 0 || count < cap else { return (false, cap) }
            s.open[client] = count + 1
            return (true, cap)
        }
        guard admitted else {
            refusals[.connectionCap]?.increment()
            throw TocsinError(.tooManyConnections, "client '\(client)' already holds \(cap) connections to this broker; close one first")
        }
    }

    /// Puts new limits in force (live configuration): buckets keep their tokens up to the new
    /// burst; connections already open above a lower cap stay open.
    func retune(_ limits: RateLimits) {
        state.withLock { s in
            s.configuration = limits
            s.publishes.retune(limits.publishEvents)
            s.subscribes.retune(limits.subscribes)
            s.connections.retune(limits.connections)
        }
    }

    func close(client: String) {
        state.withLock { s in
            let count = s.open[client, default: 1] - 1
            s.open[client] = count > 0 ? count : nil
        }
    }
}
