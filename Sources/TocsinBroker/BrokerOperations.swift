import Logging
import Synchronization
import TocsinCore
import TocsinHTTP

/// A broker's side of live configuration and operator commands. The controller sends them in
/// heartbeat replies (`ClusterMember`); this puts a configuration in force over the startup
/// values, carries out commands once per process (a repeat of an id it has done is answered
/// with the result it had), and holds the results until a heartbeat has delivered them.
final class BrokerOperations: Sendable {
    private struct State {
        /// The configuration version in force; nil until the controller sent one.
        var configVersion: Int64?
        /// The values in force (over the startup ones).
        var values: [String: JSONValue] = [:]
        /// Told to drain (`drain` command) and not since told to undrain.
        var drainCommanded = false
        /// Results not yet delivered in a heartbeat.
        var unreported: [CommandResult] = []
        /// Results of the latest commands, by id, for repeats (at most `rememberedLimit`).
        var done: [String: CommandResult] = [:]
        var doneOrder: [String] = []
    }

    private let broker: Broker
    private let state = Mutex(State())
    static let rememberedLimit = 256

    init(broker: Broker) {
        self.broker = broker
    }

    var configVersion: Int64? { state.withLock { $0.configVersion } }
    var drainCommanded: Bool { state.withLock { $0.drainCommanded } }

    /// The effective values in force and their version (`snapshot`, `GET /v1/config` on the broker).
    var config: (version: Int64?, values: [String: JSONValue]) { state.withLock { ($0.configVersion, $0.values) } }

    // MARK: Configuration

    /// Puts `push` in force: each live setting from it, every other one back to the settings
    /// file's value or its startup value (`Broker.setControllerSettings`).
    func apply(_ push: ConfigPush) {
        let v = push.values
        broker.setControllerSettings(v)
        let previous = state.withLock { s in
            defer {
                s.configVersion = push.version
                s.values = v
            }
            return s.configVersion
        }
        broker.metrics.configVersion.record(push.version)
        broker.logger.notice(
            "configuration applied", metadata: ["version": "\(push.version)", "previous": "\(previous.map(String.init) ?? "none")", "keys": "\(v.keys.sorted())"])
    }

    // MARK: Commands

    /// Carries out `order` unless it was done already (then its result is reported again).
    func execute(_ order: CommandOrder) {
        if let earlier = state.withLock({ $0.done[order.id] }) {
            state.withLock { s in if !s.unreported.contains(where: { $0.id == order.id }) { s.unreported.append(earlier) } }
            return
        }
        let result = CommandResult(id: order.id, outcome: carryOut(order))
        broker.logger.notice(
            "command carried out", metadata: ["command": "\(order.id)", "kind": "\(order.kind.rawValue)", "ok": "\(result.outcome.succeeded)"])
        state.withLock { s in
            s.done[order.id] = result
            s.doneOrder.append(order.id)
            if s.doneOrder.count > Self.rememberedLimit { s.done[s.doneOrder.removeFirst()] = nil }
            s.unreported.append(result)
        }
    }

    /// The results to send in the next heartbeat.
    var unreported: [CommandResult] { state.withLock { $0.unreported } }

    /// A heartbeat carrying these results was answered: they are delivered.
    func reported(_ results: [CommandResult]) {
        guard !results.isEmpty else { return }
        let ids = Set(results.map(\.id))
        state.withLock { $0.unreported.removeAll { ids.contains($0.id) } }
    }

    private func carryOut(_ order: CommandOrder) -> CommandResult.Outcome {
        switch order.kind {
        case .drain, .undrain:
            let drain = order.kind == .drain
            state.withLock { $0.drainCommanded = drain }
            // The next heartbeat says so; the controller moves the clients (or sends new ones).
            return .succeeded(.object(["draining": .bool(drain), "clients": .int(Int64(broker.sessions.identifiedCount))]))
        case .logLevel:
            guard let level = order.args["level"]?.stringValue.flatMap(Logger.Level.init(rawValue:)) else {
                return .failed(code: "invalid_command", message: "log-level needs args.level")
            }
            guard let control = broker.configuration.logLevel else {
                return .failed(code: "unavailable", message: "this broker's log level is fixed (it runs embedded)")
            }
            control.set(level)
            return .succeeded(.object(["level": .string(level.rawValue)]))
        case .reloadTLS:
            guard let tls = broker.configuration.tls else {
                return .failed(code: "unavailable", message: "this broker serves plain HTTP: no TLS to reload")
            }
            return tls.reload()
                ? .succeeded(.object(["reloaded": .bool(true)]))
                : .failed(code: "internal", message: "the TLS reload failed; the previous certificate stays (see the broker's log)")
        case .snapshot:
            return .succeeded(snapshot())
        }
    }

    /// What the broker holds now, for an operator.
    func snapshot() -> JSONValue {
        let load = broker.currentLoad()
        let (version, values) = config
        return .object([
            "id": .string(broker.configuration.brokerID), "incarnation": .string(broker.incarnation), "version": .string(TocsinVersion.current),
            "connections": .int(Int64(load.connections)), "clients": .int(Int64(broker.sessions.identifiedCount)),
            "subscriptions": .int(Int64(load.subscriptions)), "migrating": .int(Int64(load.migrating)),
            "draining": .bool(drainCommanded), "configVersion": version.map { JSONValue.int($0) } ?? .null, "config": .object(values),
            // What runs over the startup values: the settings file's and the controller's, merged.
            "live": .object(broker.liveSettings),
            "logLevel": .string((broker.configuration.logLevel?.current ?? broker.logger.logLevel).rawValue),
            "limits": broker.limits.configuration.json,
        ])
    }
}

extension RateLimits {
    /// The limits as `snapshot` reports them.
    var json: JSONValue {
        .object([
            "publishEventsPerSecond": .double(publishEvents.perSecond), "publishEventsBurst": .double(publishEvents.burst),
            "subscribesPerSecond": .double(subscribes.perSecond), "subscribesBurst": .double(subscribes.burst),
            "connectionsPerSecond": .double(connections.perSecond), "connectionsBurst": .double(connections.burst),
            "maxConnectionsPerClient": .int(Int64(maxConnectionsPerClient)),
        ])
    }
}
