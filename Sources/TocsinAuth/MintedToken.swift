import Synchronization
public import TocsinCore

/// A token this process mints for itself from the key ring and renews at half its lifetime: the
/// cluster credential brokers and controllers present to each other (scope `cluster`).
public final class MintedToken: Sendable {
    private let authority: TokenAuthority
    private let client: String
    private let scopes: [Scope]
    private let lifetime: Duration
    private let nowMillis: @Sendable () -> Int64
    private let current = Mutex<(token: String, renewAt: Int64)?>(nil)

    public init(
        authority: TokenAuthority, client: String, scopes: [Scope], lifetime: Duration = .seconds(3600),
        nowMillis: @escaping @Sendable () -> Int64
    ) {
        self.authority = authority
        self.client = client
        self.scopes = scopes
        self.lifetime = lifetime
        self.nowMillis = nowMillis
    }

    /// The current token, minted anew once half its lifetime has passed.
    public func token() async throws -> String {
        let now = nowMillis()
        if let held = current.withLock({ $0 }), now < held.renewAt { return held.token }
        let token = try await authority.mint(client: client, scopes: scopes, lifetime: lifetime, nowMillis: now)
        current.withLock { $0 = (token, now + lifetime.milliseconds / 2) }
        return token
    }

    /// As a `TokenSource`.
    public var source: TokenSource { { try await self.token() } }
}
