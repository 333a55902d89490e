/// The settings that can change while components run (`tocsin config set`), with their types
/// and ranges. A value is checked here, at the edge, before it is stored: a stored setting can
/// never be one a component would refuse or crash on.
///
/// A key that is not live but names a startup flag is refused with the flag to use and the
/// fact that it needs a restart, so an operator is not left wondering why nothing changed.
public struct LiveSetting: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// One of `LogLevelName.all`.
        case logLevel
        case integer(ClosedRange<Int64>)
        case number(ClosedRange<Double>)
        case boolean
    }

    public var key: String
    public var roles: Set<ComponentRole>
    public var kind: Kind
    public var help: String

    /// `value` as this setting stores it (integers for `.integer`, doubles for `.number`), or
    /// `invalid_setting` saying what is wrong.
    public func check(_ value: JSONValue) throws(TocsinError) -> JSONValue {
        switch kind {
        case .logLevel:
            guard let s = value.stringValue, LogLevelName.all.contains(s) else {
                throw TocsinError(.invalidSetting, "\(key) must be one of \(LogLevelName.all.joined(separator: ", ")); got \(value.serialized)")
            }
            return .string(s)
        case .integer(let range):
            guard let i = value.intValue, range.contains(i) else {
                throw TocsinError(.invalidSetting, "\(key) must be an integer in \(range.lowerBound)...\(range.upperBound); got \(value.serialized)")
            }
            return .int(i)
        case .number(let range):
            guard let d = value.doubleValue, d.isFinite, range.contains(d) else {
                throw TocsinError(.invalidSetting, "\(key) must be a number in \(range.lowerBound)...\(range.upperBound); got \(value.serialized)")
            }
            return .double(d)
        case .boolean:
            guard let b = value.boolValue else { throw TocsinError(.invalidSetting, "\(key) must be true or false; got \(value.serialized)") }
            return .bool(b)
        }
    }

    /// A value given on a command line (`tocsin config set KEY VALUE`) as the JSON it means:
    /// numbers and booleans as such, anything else as a string.
    public static func parseArgument(_ text: String) -> JSONValue {
        if let json = try? JSONValue.parse(text), json.stringValue == nil, json.objectValue == nil, json.arrayValue == nil { return json }
        return .string(text)
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "key": .string(key), "roles": .array(roles.sorted().map { .string($0.rawValue) }), "help": .string(help),
        ]
        switch kind {
        case .logLevel:
            o["type"] = .string("string")
            o["values"] = .array(LogLevelName.all.map(JSONValue.string))
        case .integer(let r):
            o["type"] = .string("integer")
            o["min"] = .int(r.lowerBound)
            o["max"] = .int(r.upperBound)
        case .number(let r):
            o["type"] = .string("number")
            o["min"] = .double(r.lowerBound)
            o["max"] = .double(r.upperBound)
        case .boolean:
            o["type"] = .string("boolean")
        }
        return .object(o)
    }
}

/// swift-log's level names, spelled as `--log-level` takes them.
public enum LogLevelName {
    public static let all = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
}

public enum LiveSettings {
    /// Every live setting, sorted by key.
    public static let all: [LiveSetting] = [
        LiveSetting(key: "log.level", roles: [.broker, .controller], kind: .logLevel, help: "The least severe log message written."),
        LiveSetting(
            key: "limits.publishEventsPerSecond", roles: [.broker], kind: .number(0...1e9),
            help: "Events a client may publish a second, sustained (0: unlimited)."),
        LiveSetting(key: "limits.publishEventsBurst", roles: [.broker], kind: .number(1...1e9), help: "Events a client may publish at once after a quiet spell."),
        LiveSetting(
            key: "limits.subscribesPerSecond", roles: [.broker], kind: .number(0...1e9), help: "subscribe requests a client may make a second (0: unlimited)."),
        LiveSetting(key: "limits.subscribesBurst", roles: [.broker], kind: .number(1...1e9), help: "subscribe requests a client may make at once."),
        LiveSetting(
            key: "limits.connectionsPerSecond", roles: [.broker], kind: .number(0...1e9),
            help: "WebSocket connections a client may open a second (0: unlimited)."),
        LiveSetting(key: "limits.connectionsBurst", roles: [.broker], kind: .number(1...1e9), help: "WebSocket connections a client may open at once."),
        LiveSetting(
            key: "limits.maxConnectionsPerClient", roles: [.broker], kind: .integer(0...1_000_000),
            help: "WebSocket connections one client may hold open at once (0: no cap). Connections already open stay."),
        LiveSetting(
            key: "rebalance.enabled", roles: [.controller], kind: .boolean,
            help: "Whether the controller moves clients to even the load (failover and drain work either way)."),
        LiveSetting(
            key: "rebalance.relativeTolerance", roles: [.controller], kind: .number(0...10),
            help: "How far above the mean share (as a fraction of it) a broker may be before clients are moved off it."),
        LiveSetting(
            key: "rebalance.absoluteTolerance", roles: [.controller], kind: .integer(0...10_000_000),
            help: "How many clients above the mean share a broker may be before clients are moved off it."),
    ].sorted { $0.key < $1.key }

    /// Startup flags people may try to set live, with the flag that sets them.
    public static let startupOnly: [String: String] = [
        "fetchCache.entries": "--fetch-cache-entries", "fetchCache.bytes": "--fetch-cache-bytes", "store": "--store", "port": "--port",
        "host": "--host", "tls": "--tls-cert/--tls-key (reload with SIGHUP or the reload-tls command)", "auth": "--auth-keys",
        "region": "--region", "capacity": "--capacity", "leaseDuration": "--lease (controller)",
    ]

    public static func setting(_ key: String) -> LiveSetting? { byKey[key] }

    private static let byKey: [String: LiveSetting] = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })

    /// The setting `key` names, applicable to `role`; `invalid_setting` otherwise (naming the
    /// startup flag when the key is one, or the live keys when it is unknown).
    public static func setting(_ key: String, for role: ComponentRole) throws(TocsinError) -> LiveSetting {
        guard let setting = byKey[key] else {
            if let flag = startupOnly[key] {
                throw TocsinError(.invalidSetting, "\(key) is not live: it is set at startup with \(flag), and changing it needs a restart")
            }
            throw TocsinError(.invalidSetting, "unknown setting \(quotedForMessage(key)); live settings: \(all.map(\.key).joined(separator: ", "))")
        }
        guard setting.roles.contains(role) else {
            throw TocsinError(
                .invalidSetting,
                "\(key) is a \(setting.roles.sorted().map(\.rawValue).joined(separator: "/")) setting; a \(role.rawValue) has no such setting")
        }
        return setting
    }
}

extension LiveSettings {
    /// The keys of a settings file (`--config`): nested objects name dotted keys
    /// (`{"limits": {"publishEventsBurst": 50}}` is `limits.publishEventsBurst`), as do flat ones.
    public static func flattenedKeys(_ json: JSONValue, prefix: String = "") -> [String] {
        guard case .object(let o) = json else { return prefix.isEmpty ? [] : [prefix] }
        return o.keys.sorted().flatMap { key in flattenedKeys(o[key]!, prefix: prefix.isEmpty ? key : prefix + "." + key) }
    }

    /// What a settings file says about keys that are not live settings of `role`: each one, with
    /// why (a startup flag, another role's, unknown). They are not applied; the others are.
    public static func problems(withKeys keys: [String], for role: ComponentRole) -> [String] {
        keys.compactMap { key -> String? in
            do throws(TocsinError) {
                _ = try setting(key, for: role)
                return nil
            } catch {
                return error.message
            }
        }
    }
}

