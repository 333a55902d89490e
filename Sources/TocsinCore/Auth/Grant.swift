/// What a verified token says: who holds it, until when, and what it allows. The transports
/// get one from a `TokenVerifier` and ask it before every operation (`allows`).
public struct Grant: Sendable, Hashable {
    /// The token's subject: the client id, and so the identity of its durable subscriptions.
    public var client: String
    public var scopes: [Scope]
    /// When the token stops being accepted, in wall-clock milliseconds since 1970.
    public var expiresAtMillis: Int64
    /// The signing key's id (`kid`), for logs and rotation.
    public var keyID: String?
    /// When the token starts being accepted (`nbf`), if it says.
    public var notBeforeMillis: Int64?

    public init(client: String, scopes: [Scope], expiresAtMillis: Int64, keyID: String? = nil) {
        self.client = client
        self.scopes = scopes
        self.expiresAtMillis = expiresAtMillis
        self.keyID = keyID
    }

    /// Whether a connection with this token may identify as `id`: the token's client id, or one
    /// of its sub-identities `<client>#…` (the client library gives each subscription its own
    /// connection and id that way).
    public func mayIdentify(as id: String) -> Bool {
        id == client || (id.utf8.count > client.utf8.count + 1 && id.hasPrefix(client + "#"))
    }

    /// Whether the token allows the operation (it is not checked for expiry here: see `check`).
    public func allows(_ permission: Permission) -> Bool {
        switch permission {
        case .authenticated: return true
        case .owner(let owner): return mayIdentify(as: owner)
        default: break
        }
        return scopes.contains { scope in
            switch (scope, permission) {
            case (.admin, .admin), (.discovery, .discovery), (.metrics, .metrics), (.cluster, .cluster): true
            case (.publish(let p), .publish(let name)), (.subscribe(let p), .subscribe(let name)), (.read(let p), .read(let name)),
                (.write(let p), .write(let name)):
                p.matches(name)
            default: false
            }
        }
    }

    /// `token_expired` once the token expired, `forbidden` when it lacks the permission.
    public func check(_ permission: Permission, nowMillis: Int64) throws(TocsinError) {
        guard nowMillis < expiresAtMillis else {
            throw TocsinError(.tokenExpired, "the token expired at \(TimeFormat.format(expiresAtMillis)); get a fresh one")
        }
        guard allows(permission) else {
            throw TocsinError(.forbidden, permission.refusal(client: client))
        }
    }
}

/// An operation a token must allow. Routes and WebSocket messages each name theirs.
public enum Permission: Sendable, Hashable, CustomStringConvertible {
    /// Any valid token (ping, hello, refresh).
    case authenticated
    case publish(stream: String)
    case subscribe(channel: String)
    /// Reading a stream's events, or a dataset's records.
    case read(stream: String)
    case write(dataset: String)
    case admin
    case discovery
    case metrics
    case cluster
    /// Acting on something owned by this client id (a durable subscription): only its owner may.
    case owner(String)

    public var description: String {
        switch self {
        case .authenticated: "a valid token"
        case .publish(let s): "publish:\(s)"
        case .subscribe(let c): "subscribe:\(c)"
        case .read(let s): "read:\(s)"
        case .write(let d): "write:\(d)"
        case .admin: "admin"
        case .discovery: "discovery"
        case .metrics: "metrics"
        case .cluster: "cluster"
        case .owner(let o): "ownership of client '\(o)'s subscription"
        }
    }

    func refusal(client: String) -> String {
        switch self {
        case .owner: "the subscription belongs to another client; client '\(client)' may act only on its own"
        default: "the token of client '\(client)' lacks the scope \(self)"
        }
    }
}
