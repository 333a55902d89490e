/// What an operator can tell components to do (`tocsin command`).
public enum CommandKind: String, Sendable, Hashable, CaseIterable {
    /// Take no new clients and move the ones it has to other brokers (it keeps running).
    case drain
    /// Take clients again after a drain.
    case undrain
    /// Read the TLS certificate and key files again (as SIGHUP does).
    case reloadTLS = "reload-tls"
    /// Set the log level until the next configuration change or restart: `{"level": "debug"}`.
    case logLevel = "log-level"
    /// Report what the component holds: load, sessions, configuration (a diagnostic snapshot).
    case snapshot

    public var roles: Set<ComponentRole> {
        switch self {
        case .drain, .undrain: [.broker]
        case .reloadTLS, .logLevel, .snapshot: [.broker, .controller]
        }
    }

    /// `args` checked for this kind: an object, with what the kind needs.
    public func checkArguments(_ args: JSONValue) throws(TocsinError) -> JSONValue {
        guard case .object(let o) = args else { throw TocsinError(.invalidCommand, "\(rawValue): 'args' must be a JSON object") }
        switch self {
        case .logLevel:
            guard let level = o["level"]?.stringValue, LogLevelName.all.contains(level) else {
                throw TocsinError(.invalidCommand, "log-level: 'args.level' must be one of \(LogLevelName.all.joined(separator: ", "))")
            }
            return .object(["level": .string(level)])
        case .drain, .undrain, .reloadTLS, .snapshot:
            guard o.isEmpty else { throw TocsinError(.invalidCommand, "\(rawValue) takes no arguments") }
            return .object([:])
        }
    }
}

/// Who a command is for: one component, or every live component of a role when it is given
/// (the same shape as where a setting applies).
public typealias CommandTarget = ConfigScope

/// A command sent to one component, as it travels in a heartbeat reply.
public struct CommandOrder: Sendable, Hashable {
    public var id: String
    public var kind: CommandKind
    public var args: JSONValue
    /// After this (ms since the epoch, controller clock) the result no longer counts.
    public var deadlineMillis: Int64

    public init(id: String, kind: CommandKind, args: JSONValue, deadlineMillis: Int64) {
        self.id = id
        self.kind = kind
        self.args = args
        self.deadlineMillis = deadlineMillis
    }

    public var json: JSONValue {
        .object(["id": .string(id), "kind": .string(kind.rawValue), "args": args, "deadlineMillis": .int(deadlineMillis)])
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "order", code: .badRequest)
        guard let kind = CommandKind(rawValue: try fields.string("kind")) else { throw TocsinError(.badRequest, "order: unknown kind") }
        self.init(id: try fields.string("id"), kind: kind, args: try fields.optional("args") ?? .object([:]), deadlineMillis: try fields.int("deadlineMillis"))
    }
}

/// What a component reports after carrying out a command: a result object, or an error.
public struct CommandResult: Sendable, Hashable {
    public var id: String
    public var outcome: Outcome

    public enum Outcome: Sendable, Hashable {
        case succeeded(JSONValue)
        case failed(code: String, message: String)

        public var succeeded: Bool {
            if case .succeeded = self { return true }
            return false
        }
    }

    public init(id: String, outcome: Outcome) {
        self.id = id
        self.outcome = outcome
    }

    public var json: JSONValue {
        switch outcome {
        case .succeeded(let result): .object(["id": .string(id), "ok": .bool(true), "result": result])
        case .failed(let code, let message):
            .object(["id": .string(id), "ok": .bool(false), "error": .object(["code": .string(code), "message": .string(message)])])
        }
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "result", code: .badRequest)
        id = try fields.string("id")
        if json["ok"]?.boolValue == true {
            outcome = .succeeded(try fields.optional("result") ?? .object([:]))
        } else {
            outcome = .failed(
                code: json["error"]?["code"]?.stringValue ?? "internal", message: json["error"]?["message"]?.stringValue ?? "no message")
        }
    }
}

/// A command and where it stands at each of its targets.
public struct CommandRecord: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        /// Waiting for the target's next heartbeat (or for it to come back).
        case pending
        /// Sent in a heartbeat reply; no result yet (it is sent again until one comes).
        case delivered
        case succeeded
        case failed
        /// No result before the deadline.
        case timedOut = "timed_out"

        public var isFinal: Bool { self == .succeeded || self == .failed || self == .timedOut }
    }

    public struct Target: Sendable, Hashable {
        public var component: String
        public var state: State
        /// The result object (succeeded) or `{"code", "message"}` (failed).
        public var result: JSONValue?
        /// When it was first sent, and when it finished (ms since the epoch).
        public var deliveredAtMillis: Int64?
        public var finishedAtMillis: Int64?
    }

    public var id: String
    public var kind: CommandKind
    public var args: JSONValue
    public var target: CommandTarget
    public var by: String
    public var createdAtMillis: Int64
    public var deadlineMillis: Int64
    public var targets: [Target]

    public var isFinished: Bool { targets.allSatisfy { $0.state.isFinal } }

    public var json: JSONValue {
        .object([
            "id": .string(id), "kind": .string(kind.rawValue), "args": args, "target": target.json, "by": .string(by),
            "createdAt": .string(TimeFormat.format(createdAtMillis)), "createdAtMillis": .int(createdAtMillis),
            "deadline": .string(TimeFormat.format(deadlineMillis)), "deadlineMillis": .int(deadlineMillis),
            "finished": .bool(isFinished),
            "targets": .array(
                targets.map { t in
                    var o: [String: JSONValue] = ["component": .string(t.component), "state": .string(t.state.rawValue)]
                    if let r = t.result { o["result"] = r }
                    if let d = t.deliveredAtMillis { o["deliveredAtMillis"] = .int(d) }
                    if let f = t.finishedAtMillis { o["finishedAtMillis"] = .int(f) }
                    return .object(o)
                }),
        ])
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "command", code: .badRequest)
        guard let kind = CommandKind(rawValue: try fields.string("kind")) else { throw TocsinError(.badRequest, "command: unknown kind") }
        guard let target = try fields.optional("target") else { throw TocsinError(.badRequest, "command: 'target' is missing") }
        id = try fields.string("id")
        self.kind = kind
        args = try fields.optional("args") ?? .object([:])
        self.target = try CommandTarget(json: target)
        by = try fields.string("by")
        createdAtMillis = try fields.int("createdAtMillis")
        deadlineMillis = try fields.int("deadlineMillis")
        var targets: [Target] = []
        for t in try fields.optional("targets")?.arrayValue ?? [] {
            guard let component = t["component"]?.stringValue, let state = t["state"]?.stringValue.flatMap(State.init(rawValue:)) else {
                throw TocsinError(.badRequest, "command: a target needs 'component' and 'state'")
            }
            targets.append(
                Target(
                    component: component, state: state, result: t["result"], deliveredAtMillis: t["deliveredAtMillis"]?.intValue,
                    finishedAtMillis: t["finishedAtMillis"]?.intValue))
        }
        self.targets = targets
    }

    init(id: String, kind: CommandKind, args: JSONValue, target: CommandTarget, by: String, createdAtMillis: Int64, deadlineMillis: Int64, targets: [Target]) {
        self.id = id
        self.kind = kind
        self.args = args
        self.target = target
        self.by = by
        self.createdAtMillis = createdAtMillis
        self.deadlineMillis = deadlineMillis
        self.targets = targets
    }
}

/// Commands until they are done: a pure book the controller holds (and persists with a
/// ledger). A command is kept for each of its targets until that target reports a result or
/// the deadline passes; it is handed out in every heartbeat reply to that component id until
/// then, so a broker that restarts meanwhile (a new incarnation under the same id) gets it
/// when it comes back. Components remember the ids they carried out and answer a repeat with
/// the result they had, so a command runs once per process even when its result was lost.
///
/// A broadcast is sent to the components of the role that are live when it is given.
public struct CommandBook: Sendable, Hashable {
    /// Every command kept, oldest first: the unfinished ones and the latest finished ones.
    public private(set) var commands: [CommandRecord] = []
    public private(set) var nextNumber: Int64 = 1
    /// Finished commands kept for `GET /v1/commands`.
    public static let finishedLimit = 200
    /// Unfinished commands at once: more is refused, so a stuck target cannot grow the book without bound.
    public static let openLimit = 1000
    /// The most bytes of one target's result kept; a larger one is replaced by its size.
    public static let resultLimit = 16 << 10
    /// The longest a command may wait for its results.
    public static let timeoutRange: ClosedRange<Int64> = 1_000...86_400_000

    public init() {}

    /// Records a command for `target`: the live components of its role (`components`: id and
    /// role of each), or the one it names, which must be among `known` (live or seen lately).
    public mutating func submit(
        kind: CommandKind, args: JSONValue, target: CommandTarget, timeoutMillis: Int64, by: String, nowMillis: Int64,
        live components: [(id: String, role: ComponentRole)], known: [String: ComponentRole]
    ) throws(TocsinError) -> CommandRecord {
        let args = try kind.checkArguments(args)
        guard Self.timeoutRange.contains(timeoutMillis) else {
            throw TocsinError(.invalidCommand, "'timeoutSeconds' must be in 1...86400")
        }
        guard commands.count(where: { !$0.isFinished }) < Self.openLimit else {
            throw TocsinError(.invalidCommand, "\(Self.openLimit) commands are still waiting for results; wait for them or let them time out")
        }
        let ids: [String]
        switch target {
        case .role(let role):
            guard kind.roles.contains(role) else { throw TocsinError(.invalidCommand, "\(kind.rawValue) is not a command a \(role.rawValue) takes") }
            ids = components.filter { $0.role == role }.map(\.id).sorted()
            guard !ids.isEmpty else { throw TocsinError(.unknownComponent, "no live \(role.rawValue) to send \(kind.rawValue) to") }
        case .component(let id):
            guard let role = known[id] else {
                throw TocsinError(.unknownComponent, "no component \(quotedForMessage(id)) is live or was seen lately (see GET /v1/components)")
            }
            guard kind.roles.contains(role) else {
                throw TocsinError(.invalidCommand, "\(kind.rawValue) is not a command a \(role.rawValue) takes (\(id) is a \(role.rawValue))")
            }
            ids = [id]
        }
        let record = CommandRecord(
            id: "cmd-\(nextNumber)", kind: kind, args: args, target: target, by: by, createdAtMillis: nowMillis,
            deadlineMillis: nowMillis + timeoutMillis,
            targets: ids.map { CommandRecord.Target(component: $0, state: .pending) })
        nextNumber += 1
        commands.append(record)
        return record
    }

    /// The orders for `component`'s heartbeat reply: every unfinished command with it as an
    /// unfinished target (marked delivered).
    public mutating func orders(for component: String, nowMillis: Int64) -> [CommandOrder] {
        var orders: [CommandOrder] = []
        for i in commands.indices where !commands[i].isFinished {
            guard let t = commands[i].targets.firstIndex(where: { $0.component == component && !$0.state.isFinal }) else { continue }
            if commands[i].targets[t].state == .pending {
                commands[i].targets[t].state = .delivered
                commands[i].targets[t].deliveredAtMillis = nowMillis
            }
            let c = commands[i]
            orders.append(CommandOrder(id: c.id, kind: c.kind, args: c.args, deadlineMillis: c.deadlineMillis))
        }
        return orders
    }

    /// Takes `component`'s results; results for commands it was not sent, or that have already
    /// finished there, are ignored. Returns the commands that finished with them.
    @discardableResult
    public mutating func report(_ results: [CommandResult], from component: String, nowMillis: Int64) -> [CommandRecord] {
        var finished: [CommandRecord] = []
        for result in results {
            guard let i = commands.firstIndex(where: { $0.id == result.id }),
                let t = commands[i].targets.firstIndex(where: { $0.component == component && !$0.state.isFinal })
            else { continue }
            switch result.outcome {
            case .succeeded(let value):
                commands[i].targets[t].state = .succeeded
                // Kept for everyone to read: a result is bounded (a snapshot is about 1 KB).
                let bytes = value.serialized.utf8.count
                commands[i].targets[t].result = bytes <= Self.resultLimit ? value : .object(["truncated": .bool(true), "bytes": .int(Int64(bytes))])
            case .failed(let code, let message):
                commands[i].targets[t].state = .failed
                commands[i].targets[t].result = .object(["code": .string(String(code.prefix(64))), "message": .string(String(message.prefix(1024)))])
            }
            commands[i].targets[t].finishedAtMillis = nowMillis
            if commands[i].isFinished { finished.append(commands[i]) }
        }
        trim()
        return finished
    }

    /// Times out every unfinished target whose command's deadline has passed; returns the
    /// commands that finished so.
    public mutating func expire(nowMillis: Int64) -> [CommandRecord] {
        var finished: [CommandRecord] = []
        for i in commands.indices where !commands[i].isFinished && commands[i].deadlineMillis <= nowMillis {
            for t in commands[i].targets.indices where !commands[i].targets[t].state.isFinal {
                commands[i].targets[t].state = .timedOut
                commands[i].targets[t].finishedAtMillis = nowMillis
            }
            finished.append(commands[i])
        }
        if !finished.isEmpty { trim() }
        return finished
    }

    public func command(_ id: String) -> CommandRecord? { commands.first { $0.id == id } }

    /// Drops the oldest finished commands beyond `finishedLimit`.
    private mutating func trim() {
        var excess = commands.count(where: \.isFinished) - Self.finishedLimit
        guard excess > 0 else { return }
        commands.removeAll { c in
            guard excess > 0, c.isFinished else { return false }
            excess -= 1
            return true
        }
    }

    // MARK: Persistence

    public var json: JSONValue { .object(["next": .int(nextNumber), "commands": .array(commands.map(\.json))]) }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "commands", code: .badRequest)
        nextNumber = max(1, try fields.int("next", default: 1))
        for c in try fields.optional("commands")?.arrayValue ?? [] { commands.append(try CommandRecord(json: c)) }
    }
}
