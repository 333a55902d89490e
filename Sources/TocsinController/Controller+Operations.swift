import Foundation
import Logging
import TocsinCore
import TocsinHTTP
import TocsinStore

/// The operator's side of the controller: the registry of components, live configuration and
/// commands (`ControlPlane` decides; this applies). Brokers get their configuration and
/// commands in heartbeat replies and report back in the next heartbeat; the controller
/// carries out its own (as the component `holder`) at every tick.
///
/// With a ledger, the plane is one document in the store: the leader writes it (fenced by its
/// epoch) before it acknowledges a change, and again whenever results or timeouts changed it;
/// followers read it when its revision moves, so they apply controller settings too, and a new
/// leader goes on with the same commands.
extension Controller {
    // MARK: Components

    /// Every live component: the controllers (with a ledger, each one's registration there;
    /// alone, this one) and the brokers.
    public func components() async -> [ComponentSummary] {
        var controllers: [ComponentSummary] = []
        if let ledger, let listed = try? await ledger.controllers() {
            let leader = leader(at: now(), me: advertisedURL.withLock { $0 }).0
            controllers = listed.map { c in
                var c = c
                c.state = c.urls["http"] == leader ? "leader" : "follower"
                return c
            }
        }
        if !controllers.contains(where: { $0.id == holder }) { controllers.append(selfSummary()) }
        let (brokers, control) = (machine.withLock { $0.live }, self.control.withLock { ($0.seen, $0.running) })
        let brokerSummaries = brokers.map { b in
            let seen = control.0[b.id]
            return ComponentSummary(
                role: .broker, id: b.id, incarnation: b.incarnation, urls: ["http": b.httpURL, "ws": b.webSocketURL],
                version: seen?.version ?? "unknown", startedAtMillis: seen?.startedAtMillis, refreshedAtMillis: seen?.atMillis,
                state: b.state.rawValue, configVersion: control.1[b.id])
        }
        return controllers.sorted { $0.id < $1.id } + brokerSummaries
    }

    /// This controller as the registry lists it.
    func selfSummary() -> ComponentSummary {
        let state = ledger == nil ? "leader" : (isLeader ? "leader" : "follower")
        return ComponentSummary(
            role: .controller, id: holder, incarnation: holder, urls: advertisedURL.withLock { $0 }.map { ["http": $0] } ?? [:],
            version: TocsinVersion.current, startedAtMillis: startedAtMillis, refreshedAtMillis: wallMillis(), state: state,
            configVersion: appliedConfigVersion.load(ordering: .relaxed))
    }

    /// Who commands may name now: the live brokers, and this controller when it leads (commands
    /// to controllers are carried out by the leader).
    func liveComponents() -> [(id: String, role: ComponentRole)] {
        var live = machine.withLock { $0.live }.map { (id: $0.id, role: ComponentRole.broker) }
        if (try? leadingEpoch(at: now())) != nil { live.append((holder, .controller)) }
        return live
    }

    // MARK: Operator API

    /// Sets (or, with a nil value, unsets) a live setting, persisted before it returns.
    public func setConfig(_ key: String, to value: JSONValue?, in scope: ConfigScope, by: String) async throws -> ConfigChange? {
        _ = try leadingEpoch(at: now())
        let (live, at) = (liveComponents(), wallMillis())
        let change = try control.withLock { p throws(TocsinError) -> ConfigChange? in
            if let value { return try p.set(key, to: value, in: scope, by: by, nowMillis: at, live: live) }
            return p.unset(key, in: scope, by: by, nowMillis: at)
        }
        if let change {
            logger.notice(
                "configuration changed",
                metadata: [
                    "version": "\(change.version)", "scope": "\(change.scope)", "key": "\(change.key)", "value": "\(change.new?.serialized ?? "unset")",
                    "by": "\(by)",
                ])
            noteForDashboard(
                "config", "config v\(change.version): \(change.key) = \(change.new?.serialized ?? "unset") for \(change.scope) (by \(by))")
            try await persistControl()
            await applyOwnConfig()
        }
        return change
    }

    /// Records a command (persisted before it returns); it reaches brokers in their next heartbeat reply.
    public func submitCommand(
        _ kind: CommandKind, args: JSONValue, target: CommandTarget, timeoutMillis: Int64, by: String
    ) async throws -> CommandRecord {
        _ = try leadingEpoch(at: now())
        let (live, at) = (liveComponents(), wallMillis())
        let record = try control.withLock { p throws(TocsinError) in
            try p.submit(kind: kind, args: args, target: target, timeoutMillis: timeoutMillis, by: by, nowMillis: at, live: live)
        }
        logger.notice(
            "command given",
            metadata: ["command": "\(record.id)", "kind": "\(kind.rawValue)", "targets": "\(record.targets.map(\.component))", "by": "\(by)"])
        metrics.commands.increment()
        noteForDashboard("command", "\(record.id) \(kind.rawValue) to \(record.targets.map(\.component).joined(separator: ", ")) (by \(by))")
        try await persistControl()
        return record
    }

    public var configSnapshot: (book: ConfigBook, revision: Int64) { control.withLock { ($0.config, $0.revision) } }
    public var commandBook: CommandBook { control.withLock { $0.commands } }

    // MARK: Heartbeats and ticks

    /// A broker's report in its heartbeat, folded into the plane; returns its configuration (when
    /// it runs another version), its commands, and whether it reports an `undrain` done (then it
    /// takes clients again).
    func operations(for id: String, incarnation: String, report: HeartbeatReport) -> (ConfigPush?, [CommandOrder], undrained: Bool) {
        let at = wallMillis()
        let (reply, finished, undrained) = control.withLock { p in
            let before = Set(p.commands.commands.filter(\.isFinished).map(\.id))
            let undrained = report.results.contains { r in
                r.outcome.succeeded && p.commands.command(r.id)?.kind == .undrain
            }
            let reply = p.heartbeat(
                id: id, role: .broker, incarnation: incarnation, configVersion: report.configVersion, results: report.results, nowMillis: at)
            return (reply, p.commands.commands.filter { $0.isFinished && !before.contains($0.id) }, undrained)
        }
        for c in finished { logFinished(c) }
        return (reply.config, reply.orders, undrained)
    }

    /// Every tick: time out overdue commands, carry out this controller's own commands and
    /// configuration, and (with a ledger, leading) persist what changed.
    func operationsTick() async {
        let at = wallMillis()
        let leading = (try? leadingEpoch(at: now())) != nil
        if leading {
            let expired = control.withLock { $0.tick(nowMillis: at) }
            for c in expired { logFinished(c) }
            let results = ownResults.withLock { r in
                defer { r = [] }
                return r
            }
            let applied = appliedConfigVersion.load(ordering: .relaxed)
            let (_, orders) = control.withLock {
                $0.heartbeat(id: holder, role: .controller, incarnation: holder, configVersion: applied, results: results, nowMillis: at)
            }
            for order in orders { ownResults.withLock { $0.append(carryOut(order)) } }
        }
        await applyOwnConfig()
        if leading { try? await persistControl() }
    }

    /// Puts this controller's effective configuration in force when its version moved.
    func applyOwnConfig() async {
        let (version, values) = control.withLock { ($0.config.version, $0.config.effective(role: .controller, id: holder)) }
        guard appliedConfigVersion.exchange(version, ordering: .relaxed) != version else { return }
        let startup = configuration
        if let control = configuration.logLevel {
            control.set(values["log.level"]?.stringValue.flatMap(Logger.Level.init(rawValue:)) ?? control.startup)
        }
        var policy = startup.rebalance
        if let r = values["rebalance.relativeTolerance"]?.doubleValue { policy.relativeTolerance = r }
        if let a = values["rebalance.absoluteTolerance"]?.intValue { policy.absoluteTolerance = Int(a) }
        let enabled = values["rebalance.enabled"]?.boolValue ?? startup.rebalanceEnabled
        machine.withLock { $0.retune(rebalance: policy, enabled: enabled) }
        logger.info("configuration applied", metadata: ["version": "\(version)"])
    }

    /// Writes the plane to the ledger when it changed since the last write (leader only).
    func persistControl() async throws {
        guard let ledger else { return }
        let (document, revision) = control.withLock { ($0.json.serialized, $0.revision) }
        guard revision > savedControlRevision.load(ordering: .relaxed) else { return }
        let epoch = try leadingEpoch(at: now())
        guard try await ledger.saveControl(document, revision: revision, holder: holder, epoch: epoch) else {
            throw TocsinError(.notLeader, "this controller lost the lead while saving; retry (the new leader has the last saved state)")
        }
        savedControlRevision.store(revision, ordering: .relaxed)
    }

    /// With a ledger, when not leading (or just elected): take the plane the leader last saved.
    func loadControl(_ ledger: any ControllerLedger) async throws {
        guard let (document, revision) = try await ledger.loadControl(newerThan: savedControlRevision.load(ordering: .relaxed)) else { return }
        let parsed = try ControlPlane.parse(try JSONValue.parse(document))
        control.withLock { $0.adopt(config: parsed.config, commands: parsed.commands, revision: revision) }
        savedControlRevision.store(revision, ordering: .relaxed)
    }

    /// A command for this controller, carried out at once.
    private func carryOut(_ order: CommandOrder) -> CommandResult {
        switch order.kind {
        case .logLevel:
            guard let level = order.args["level"]?.stringValue.flatMap(Logger.Level.init(rawValue:)) else {
                return CommandResult(id: order.id, outcome: .failed(code: "invalid_command", message: "no level"))
            }
            guard let control = configuration.logLevel else {
                return CommandResult(id: order.id, outcome: .failed(code: "unavailable", message: "this controller's log level is fixed (embedded)"))
            }
            control.set(level)
            return CommandResult(id: order.id, outcome: .succeeded(.object(["level": .string(level.rawValue)])))
        case .reloadTLS:
            guard let tls = configuration.tls else {
                return CommandResult(id: order.id, outcome: .failed(code: "unavailable", message: "this controller serves plain HTTP: no TLS to reload"))
            }
            return tls.reload()
                ? CommandResult(id: order.id, outcome: .succeeded(.object(["reloaded": .bool(true)])))
                : CommandResult(id: order.id, outcome: .failed(code: "internal", message: "the TLS reload failed; the previous certificate stays (see the log)"))
        case .snapshot:
            let brokers = machine.withLock { $0.live }
            let config = control.withLock { ($0.config.version, $0.config.effective(role: .controller, id: holder)) }
            return CommandResult(
                id: order.id,
                outcome: .succeeded(
                    .object([
                        "id": .string(holder), "version": .string(TocsinVersion.current), "leader": .bool(true),
                        "brokers": .int(Int64(brokers.count)), "clients": .int(Int64(brokers.reduce(0) { $0 + $1.load.connections })),
                        "configVersion": .int(config.0), "config": .object(config.1),
                        "logLevel": .string((configuration.logLevel?.current ?? logger.logLevel).rawValue),
                    ])))
        case .drain, .undrain:
            return CommandResult(id: order.id, outcome: .failed(code: "invalid_command", message: "a controller does not drain"))
        }
    }

    private func logFinished(_ c: CommandRecord) {
        let counts = Dictionary(grouping: c.targets, by: \.state).mapValues(\.count)
        let summary = counts.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }.joined(separator: ", ")
        let failed = c.targets.contains { $0.state != .succeeded }
        noteForDashboard("command", "\(c.id) \(c.kind.rawValue) finished: \(summary)")
        logger.log(
            level: failed ? .warning : .notice, "command finished",
            metadata: ["command": "\(c.id)", "kind": "\(c.kind.rawValue)", "targets": "\(summary)"])
    }
}
