/// The controller's operations state, free of I/O: the live configuration, the commands, and
/// what each component last reported running. The controller holds it under a lock, answers
/// the operator API from it, folds every heartbeat through `heartbeat(...)`, and persists it
/// (with a ledger) whenever `revision` has moved: each mutation that matters across a
/// controller restart — a setting, a command, a result, a timeout — bumps it.
public struct ControlPlane: Sendable {
    public private(set) var config = ConfigBook()
    public private(set) var commands = CommandBook()
    /// The configuration version each component last said it runs, by id.
    public private(set) var running: [String: Int64] = [:]
    /// Components seen lately, by id: a command may name one that is restarting.
    public private(set) var seen: [String: Seen] = [:]

    /// What a component said of itself, and when it was last heard from.
    public struct Seen: Sendable, Hashable {
        public var role: ComponentRole
        public var incarnation: String
        public var version: String?
        public var startedAtMillis: Int64?
        public var atMillis: Int64
    }
    /// Bumped by every change worth persisting.
    public private(set) var revision: Int64 = 0
    /// How long a component that stopped heartbeating can still be named by a command.
    public static let rememberMillis: Int64 = 10 * 60_000

    public init() {}

    // MARK: Operator API

    /// Sets a live setting (`ConfigBook.set`); for a component scope, the component must be
    /// live or seen lately (its role decides which settings apply).
    public mutating func set(
        _ key: String, to value: JSONValue, in scope: ConfigScope, by: String, nowMillis: Int64, live: [(id: String, role: ComponentRole)]
    ) throws(TocsinError) -> ConfigChange? {
        let role = try role(of: scope, live: live, nowMillis: nowMillis)
        let change = try config.set(key, to: value, in: scope, role: role, by: by, atMillis: nowMillis)
        if change != nil { revision += 1 }
        return change
    }

    public mutating func unset(_ key: String, in scope: ConfigScope, by: String, nowMillis: Int64) -> ConfigChange? {
        let change = config.unset(key, in: scope, by: by, atMillis: nowMillis)
        if change != nil { revision += 1 }
        return change
    }

    public mutating func submit(
        kind: CommandKind, args: JSONValue, target: CommandTarget, timeoutMillis: Int64, by: String, nowMillis: Int64,
        live: [(id: String, role: ComponentRole)]
    ) throws(TocsinError) -> CommandRecord {
        let record = try commands.submit(
            kind: kind, args: args, target: target, timeoutMillis: timeoutMillis, by: by, nowMillis: nowMillis, live: live,
            known: known(live: live, nowMillis: nowMillis))
        revision += 1
        return record
    }

    // MARK: Components

    /// A component's heartbeat: remembers it, takes its report (the configuration it runs, the
    /// results of commands), and returns what it should be sent: its effective configuration
    /// when it runs another version, and its commands.
    public mutating func heartbeat(
        id: String, role: ComponentRole, incarnation: String, configVersion: Int64?, results: [CommandResult], nowMillis: Int64
    ) -> (config: ConfigPush?, orders: [CommandOrder]) {
        if seen[id]?.incarnation == incarnation {
            seen[id]?.atMillis = nowMillis
        } else {
            seen[id] = Seen(role: role, incarnation: incarnation, version: nil, startedAtMillis: nil, atMillis: nowMillis)
        }
        if let configVersion { running[id] = configVersion }
        if !results.isEmpty {
            commands.report(results, from: id, nowMillis: nowMillis)
            revision += 1
        }
        let push = configVersion == config.version ? nil : ConfigPush(version: config.version, values: config.effective(role: role, id: id))
        return (push, commands.orders(for: id, nowMillis: nowMillis))
    }

    /// A component registered (or started): what it says of itself. Its configuration version
    /// is unknown until it reports one.
    public mutating func registered(
        id: String, role: ComponentRole, incarnation: String, version: String?, startedAtMillis: Int64?, nowMillis: Int64
    ) {
        seen[id] = Seen(role: role, incarnation: incarnation, version: version, startedAtMillis: startedAtMillis, atMillis: nowMillis)
        running[id] = nil
    }

    /// Times out overdue commands and forgets components not seen for `rememberMillis`.
    public mutating func tick(nowMillis: Int64) -> [CommandRecord] {
        let expired = commands.expire(nowMillis: nowMillis)
        if !expired.isEmpty { revision += 1 }
        seen = seen.filter { nowMillis - $0.value.atMillis < Self.rememberMillis }
        running = running.filter { seen[$0.key] != nil }
        return expired
    }

    /// Takes a plane another controller persisted (a new leader, or a follower catching up);
    /// what this one knew of components is kept.
    public mutating func adopt(config: ConfigBook, commands: CommandBook, revision: Int64) {
        self.config = config
        self.commands = commands
        self.revision = revision
    }

    private func known(live: [(id: String, role: ComponentRole)], nowMillis: Int64) -> [String: ComponentRole] {
        var known: [String: ComponentRole] = [:]
        for (id, s) in seen where nowMillis - s.atMillis < Self.rememberMillis { known[id] = s.role }
        for c in live { known[c.id] = c.role }
        return known
    }

    private func role(of scope: ConfigScope, live: [(id: String, role: ComponentRole)], nowMillis: Int64) throws(TocsinError) -> ComponentRole {
        switch scope {
        case .role(let r): return r
        case .component(let id):
            guard let role = known(live: live, nowMillis: nowMillis)[id] else {
                throw TocsinError(.unknownComponent, "no component \(quotedForMessage(id)) is live or was seen lately (see GET /v1/components)")
            }
            return role
        }
    }

    // MARK: Persistence

    /// The configuration and commands as one document (what a ledger stores).
    public var json: JSONValue { .object(["revision": .int(revision), "config": config.json, "commands": commands.json]) }

    public static func parse(_ json: JSONValue) throws(TocsinError) -> (config: ConfigBook, commands: CommandBook, revision: Int64) {
        (
            try json["config"].map { v throws(TocsinError) in try ConfigBook(json: v) } ?? ConfigBook(),
            try json["commands"].map { v throws(TocsinError) in try CommandBook(json: v) } ?? CommandBook(),
            json["revision"]?.intValue ?? 0
        )
    }
}

/// A component's effective live configuration, as a heartbeat reply carries it.
public struct ConfigPush: Sendable, Hashable {
    public var version: Int64
    /// The keys set for it (role, then component); a key absent is its startup value.
    public var values: [String: JSONValue]

    public init(version: Int64, values: [String: JSONValue]) {
        self.version = version
        self.values = values
    }

    public var json: JSONValue { .object(["version": .int(version), "values": .object(values)]) }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "config", code: .badRequest)
        version = try fields.int("version")
        values = try fields.optional("values")?.objectValue ?? [:]
    }
}
