/// Where a live setting applies, or whom a command is for: every component of a role, or one
/// component (by id). A component's value beats its role's; a key set nowhere is the
/// component's startup value.
public enum ConfigScope: Sendable, Hashable, Comparable, CustomStringConvertible {
    case role(ComponentRole)
    case component(String)

    public var description: String {
        switch self {
        case .role(let r): "role \(r.rawValue)"
        case .component(let id): "component \(id)"
        }
    }

    public var json: JSONValue {
        switch self {
        case .role(let r): .object(["role": .string(r.rawValue)])
        case .component(let id): .object(["component": .string(id)])
        }
    }

    public init(json: JSONValue) throws(TocsinError) {
        if let r = json["role"]?.stringValue {
            self = .role(try ComponentRole(parsing: r))
        } else if let id = json["component"]?.stringValue {
            self = .component(id)
        } else {
            throw TocsinError(.badRequest, "a scope is {\"role\": \"broker\"|\"controller\"} or {\"component\": id}")
        }
    }
}

/// One change to the live configuration, as the history keeps it.
public struct ConfigChange: Sendable, Hashable {
    /// The configuration version this change made.
    public var version: Int64
    public var scope: ConfigScope
    public var key: String
    /// The value before (nil: unset) and after (nil: unset, back to the startup value).
    public var old: JSONValue?
    public var new: JSONValue?
    /// Who made it: the token's client id, or `anonymous` when authentication is off.
    public var by: String
    /// When, in ms since the Unix epoch, on the controller's clock.
    public var atMillis: Int64

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "version": .int(version), "scope": scope.json, "key": .string(key), "by": .string(by), "at": .string(TimeFormat.format(atMillis)),
            "old": old ?? .null, "new": new ?? .null,
        ]
        o["atMillis"] = .int(atMillis)
        return .object(o)
    }

    public init(version: Int64, scope: ConfigScope, key: String, old: JSONValue?, new: JSONValue?, by: String, atMillis: Int64) {
        self.version = version
        self.scope = scope
        self.key = key
        self.old = old
        self.new = new
        self.by = by
        self.atMillis = atMillis
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "config change", code: .badRequest)
        guard let scope = try fields.optional("scope") else { throw TocsinError(.badRequest, "config change: 'scope' is missing") }
        self.init(
            version: try fields.int("version"), scope: try ConfigScope(json: scope), key: try fields.string("key"), old: try fields.optional("old"),
            new: try fields.optional("new"), by: try fields.string("by"), atMillis: try fields.int("atMillis"))
    }
}

/// The live configuration: values per scope and key, one version counter, and the history of
/// changes. Pure; the controller holds it, persists it (with a ledger) and pushes each
/// component its effective values (`effective(role:id:)`) in heartbeat replies until the
/// component reports running `version`.
///
/// Every change bumps `version` by one, so "runs version v" says exactly which changes a
/// component has applied. Values are checked against `LiveSettings` before they are stored.
public struct ConfigBook: Sendable, Hashable {
    public private(set) var version: Int64 = 0
    /// Current values, by scope and key.
    public private(set) var values: [ConfigScope: [String: JSONValue]] = [:]
    /// The latest changes, oldest first, at most `historyLimit`.
    public private(set) var history: [ConfigChange] = []
    public static let historyLimit = 1000

    public init() {}

    /// Sets `key` in `scope` to `value` (checked for `role`, the scope's role or the role of the
    /// component it names). Setting the value a key already has changes nothing and returns nil.
    public mutating func set(
        _ key: String, to value: JSONValue, in scope: ConfigScope, role: ComponentRole, by: String, atMillis: Int64
    ) throws(TocsinError) -> ConfigChange? {
        let setting = try LiveSettings.setting(key, for: role)
        let checked = try setting.check(value)
        let old = values[scope]?[key]
        guard old != checked else { return nil }
        values[scope, default: [:]][key] = checked
        return record(scope: scope, key: key, old: old, new: checked, by: by, atMillis: atMillis)
    }

    /// Removes `key` from `scope` (back to the role's value, or the startup value). Nil when it
    /// was not set there.
    public mutating func unset(_ key: String, in scope: ConfigScope, by: String, atMillis: Int64) -> ConfigChange? {
        guard let old = values[scope]?[key] else { return nil }
        values[scope]?[key] = nil
        if values[scope]?.isEmpty == true { values[scope] = nil }
        return record(scope: scope, key: key, old: old, new: nil, by: by, atMillis: atMillis)
    }

    /// What a component runs with, over its startup values: its role's values, then its own.
    public func effective(role: ComponentRole, id: String) -> [String: JSONValue] {
        var merged = values[.role(role)] ?? [:]
        for (k, v) in values[.component(id)] ?? [:] where LiveSettings.setting(k)?.roles.contains(role) == true { merged[k] = v }
        return merged
    }

    private mutating func record(scope: ConfigScope, key: String, old: JSONValue?, new: JSONValue?, by: String, atMillis: Int64) -> ConfigChange {
        version += 1
        let change = ConfigChange(version: version, scope: scope, key: key, old: old, new: new, by: by, atMillis: atMillis)
        history.append(change)
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        return change
    }

    // MARK: Persistence

    public var json: JSONValue {
        var entries: [JSONValue] = []
        for (scope, keys) in values.sorted(by: { $0.key < $1.key }) {
            for (k, v) in keys.sorted(by: { $0.key < $1.key }) {
                entries.append(.object(["scope": scope.json, "key": .string(k), "value": v]))
            }
        }
        return .object(["version": .int(version), "entries": .array(entries), "history": .array(history.map(\.json))])
    }

    /// A book as `json` wrote it. Entries whose key is no longer live (written by another
    /// version of Tocsin) are dropped rather than refused, so a stored book never stops a controller.
    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "config", code: .badRequest)
        version = try fields.int("version", default: 0)
        for entry in try fields.optional("entries")?.arrayValue ?? [] {
            guard let scopeJSON = entry["scope"], let key = entry["key"]?.stringValue, let value = entry["value"],
                let setting = LiveSettings.setting(key), (try? setting.check(value)) != nil
            else { continue }
            values[try ConfigScope(json: scopeJSON), default: [:]][key] = value
        }
        for change in try fields.optional("history")?.arrayValue ?? [] { history.append(try ConfigChange(json: change)) }
    }
}
