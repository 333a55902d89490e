/// What a token lets its holder do (docs/security.md, "Scopes"). A token's `scope` claim is a
/// space-separated list of these, as in OAuth 2.0:
///
/// - `publish:<stream>`: publish events to matching streams (HTTP and WebSocket);
/// - `subscribe:<channel>`: subscribe to matching channels, fetch and ack one's own results;
/// - `read:<stream>`: read a matching stream's stored events and description;
/// - `admin`: define and delete streams and channels, list everything;
/// - `discovery`: read the broker list and ask for an assignment;
/// - `metrics`: read `/metrics`;
/// - `cluster`: the cluster credential (brokers and controllers talking to each other).
///
/// `<stream>` and `<channel>` are name patterns where `*` matches any run of characters
/// (`publish:*`, `subscribe:Emergencies*`).
public enum Scope: Sendable, Hashable, CustomStringConvertible {
    case publish(NamePattern)
    case subscribe(NamePattern)
    case read(NamePattern)
    /// `write:<dataset>`: upsert and delete records of matching datasets.
    case write(NamePattern)
    case admin
    case discovery
    case metrics
    case cluster

    /// Parses one scope; unknown ones are an error (a typo must not silently grant nothing).
    public init(parsing text: String) throws(TocsinError) {
        switch text {
        case "admin": self = .admin
        case "discovery": self = .discovery
        case "metrics": self = .metrics
        case "cluster": self = .cluster
        default:
            guard let colon = text.firstIndex(of: ":") else {
                throw TocsinError(.badRequest, "unknown scope '\(text)' (known: publish:<stream>, subscribe:<channel>, read:<stream or dataset>, write:<dataset>, admin, discovery, metrics, cluster)")
            }
            let pattern = try NamePattern(String(text[text.index(after: colon)...]))
            switch text[..<colon] {
            case "publish": self = .publish(pattern)
            case "subscribe": self = .subscribe(pattern)
            case "read": self = .read(pattern)
            case "write": self = .write(pattern)
            default:
                throw TocsinError(.badRequest, "unknown scope '\(text)' (known: publish:<stream>, subscribe:<channel>, read:<stream or dataset>, write:<dataset>, admin, discovery, metrics, cluster)")
            }
        }
    }

    /// Parses a space-separated scope list (the `scope` claim).
    public static func list(_ text: String) throws(TocsinError) -> [Scope] {
        var scopes: [Scope] = []
        for part in text.split(separator: " ", omittingEmptySubsequences: true) {
            scopes.append(try Scope(parsing: String(part)))
        }
        return scopes
    }

    public var description: String {
        switch self {
        case .publish(let p): "publish:\(p)"
        case .subscribe(let p): "subscribe:\(p)"
        case .read(let p): "read:\(p)"
        case .write(let p): "write:\(p)"
        case .admin: "admin"
        case .discovery: "discovery"
        case .metrics: "metrics"
        case .cluster: "cluster"
        }
    }
}

/// A stream or channel name pattern: `*` matches any run of characters (none included), every
/// other character itself. Matching is linear in the name's length times the pattern's stars.
public struct NamePattern: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    private let parts: [Substring]

    public init(_ text: String) throws(TocsinError) {
        guard !text.isEmpty, text.utf8.count <= 256 else {
            throw TocsinError(.badRequest, "a scope's name pattern must have 1 to 256 bytes")
        }
        self.text = text
        self.parts = text.split(separator: "*", omittingEmptySubsequences: false)
    }

    public var description: String { text }

    public func matches(_ name: String) -> Bool {
        guard parts.count > 1 else { return name == text }
        var rest = Substring(name)
        // The first part is a prefix, the last a suffix; the middle ones appear in order between.
        guard rest.hasPrefix(parts[0]) else { return false }
        rest = rest.dropFirst(parts[0].count)
        let last = parts[parts.count - 1]
        for part in parts.dropFirst().dropLast() where !part.isEmpty {
            guard let range = rest.firstRange(of: part) else { return false }
            rest = rest[range.upperBound...]
        }
        return rest.count >= last.count && rest.hasSuffix(last)
    }
}
