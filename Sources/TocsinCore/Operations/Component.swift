/// The kinds of process in a Tocsin network. Live configuration is set per role or per
/// component, and broadcast commands go to every live component of a role.
public enum ComponentRole: String, Sendable, Hashable, CaseIterable, Comparable {
    case broker
    case controller

    public static func < (a: ComponentRole, b: ComponentRole) -> Bool { a.rawValue < b.rawValue }

    public init(parsing text: String) throws(TocsinError) {
        guard let role = ComponentRole(rawValue: text) else {
            throw TocsinError(.badRequest, "unknown role \(quotedForMessage(text)) (known: broker, controller)")
        }
        self = role
    }
}

/// This build of Tocsin, as components report it in the registry.
public enum TocsinVersion {
    public static let current = "0.20.0"
}

/// One live process as `GET /v1/components` lists it: what it is, where, since when, and
/// which configuration version it runs.
public struct ComponentSummary: Sendable, Hashable {
    public var role: ComponentRole
    public var id: String
    public var incarnation: String
    /// Its HTTP URL (and, for a broker, its WebSocket URL under `ws`).
    public var urls: [String: String]
    /// The Tocsin version it runs (`TocsinVersion.current` of its build).
    public var version: String
    /// When it started, in milliseconds since the Unix epoch (its own clock); nil when unknown.
    public var startedAtMillis: Int64?
    /// When its registration was last refreshed (heartbeat), in ms since the epoch.
    public var refreshedAtMillis: Int64?
    /// `active`, `draining` (brokers), `leader` or `follower` (controllers).
    public var state: String
    /// The live configuration version it last said it runs (nil: not yet reported).
    public var configVersion: Int64?

    public init(
        role: ComponentRole, id: String, incarnation: String, urls: [String: String], version: String, startedAtMillis: Int64?,
        refreshedAtMillis: Int64?, state: String, configVersion: Int64?
    ) {
        self.role = role
        self.id = id
        self.incarnation = incarnation
        self.urls = urls
        self.version = version
        self.startedAtMillis = startedAtMillis
        self.refreshedAtMillis = refreshedAtMillis
        self.state = state
        self.configVersion = configVersion
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "role": .string(role.rawValue), "id": .string(id), "incarnation": .string(incarnation),
            "urls": .object(urls.mapValues(JSONValue.string)), "version": .string(version), "state": .string(state),
        ]
        if let startedAtMillis { o["startedAt"] = .string(TimeFormat.format(startedAtMillis)) }
        if let refreshedAtMillis { o["refreshedAt"] = .string(TimeFormat.format(refreshedAtMillis)) }
        if let configVersion { o["configVersion"] = .int(configVersion) }
        return .object(o)
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "component", code: .badRequest)
        role = try ComponentRole(parsing: try fields.string("role"))
        id = try fields.string("id")
        incarnation = try fields.string("incarnation")
        var urls: [String: String] = [:]
        for (k, v) in try fields.optional("urls")?.objectValue ?? [:] { urls[k] = v.stringValue }
        self.urls = urls
        version = try fields.string("version")
        state = try fields.string("state")
        startedAtMillis = try fields.optional("startedAt")?.stringValue.flatMap { TimeFormat.parse($0) }
        refreshedAtMillis = try fields.optional("refreshedAt")?.stringValue.flatMap { TimeFormat.parse($0) }
        configVersion = try fields.optional("configVersion").map { _ throws(TocsinError) in try fields.int("configVersion") }
    }
}
