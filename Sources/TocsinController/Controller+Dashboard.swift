import Foundation
import TocsinCore

/// What the dashboard (`/ui`) shows, as one JSON document: the network now (controllers,
/// brokers with their load and state, regions), its last five minutes (`NetworkTimeline`), and
/// the recent events, commands and configuration changes. Served whole at `GET /v1/dashboard`
/// and pushed every second on `GET /v1/dashboard/events` (server-sent events).
extension Controller {
    /// Records the facts the dashboard shows as events (called with every `report`).
    func noteForDashboard(_ facts: [ControllerStateMachine.Fact]) {
        let at = wallMillis()
        timeline.withLock { t in
            for fact in facts {
                switch fact {
                case .registered(let r):
                    t.note("joined", subject: r.id, "\(r.id) joined (\(r.region), capacity \(r.capacity))", atMillis: at)
                case .restarted(let r, let old):
                    t.note("gone", subject: r.id, "\(r.id) gone: incarnation \(old.incarnation.prefix(8)) died; its clients fail over", atMillis: at)
                    t.note("joined", subject: r.id, "\(r.id) joined again as incarnation \(r.incarnation.prefix(8))", atMillis: at)
                case .expired(let r):
                    t.note("gone", subject: r.id, "\(r.id) gone: its lease expired; its clients fail over", atMillis: at)
                case .draining(let id):
                    t.note("draining", subject: id, "\(id) draining: its clients are moved to others", atMillis: at)
                case .undrained(let id):
                    t.note("active", subject: id, "\(id) takes clients again", atMillis: at)
                case .deregistered(let id):
                    t.note("left", subject: id, "\(id) left (deregistered)", atMillis: at)
                case .planned(let plan):
                    t.migrationsOrdered(plan.totalClients)
                    t.note(
                        "rebalance", "rebalance: " + plan.moves.map { "\($0.from)→\($0.to) \($0.count)" }.joined(separator: ", "), atMillis: at)
                case .counted:
                    break
                }
            }
        }
    }

    func noteForDashboard(_ kind: String, subject: String? = nil, _ text: String) {
        let at = wallMillis()
        timeline.withLock { $0.note(kind, subject: subject, text, atMillis: at) }
    }

    /// One sample a second (called every tick).
    func sampleForDashboard() {
        let at = wallMillis()
        guard lastSampleMillis.withLock({ last in
            guard at - last >= 1000 else { return false }
            last = at
            return true
        }) else { return }
        let brokers = machine.withLock { $0.live }.map(BrokerSummary.init)
        timeline.withLock { $0.sample(brokers, atMillis: at) }
        metrics.utilization.record(Autoscaler(policy: Autoscaler.Policy()).utilization(brokers))
    }

    /// The dashboard's document: built at most twice a second, however many dashboards are open
    /// (each open event stream asks every second).
    public func dashboard() async -> JSONValue {
        let at = wallMillis()
        let cached: JSONValue? = dashboardCache.withLock { c in
            guard let c, at - c.atMillis < 500 else { return Optional<JSONValue>.none }
            return c.document
        }
        if let cached { return cached }
        let document = await buildDashboard()
        dashboardCache.withLock { $0 = (at, document) }
        return document
    }

    private func buildDashboard() async -> JSONValue {
        let components = await components()
        let (samples, events, gone) = timeline.withLock { ($0.samples, $0.events, $0.gone) }
        let brokers = machine.withLock { $0.live }
        let (config, commands, running) = control.withLock { ($0.config, $0.commands.commands.suffix(10), $0.running) }
        let view = cluster
        var regions: [String: (brokers: Int, clients: Int, subscriptions: Int)] = [:]
        for b in brokers {
            var r = regions[b.region] ?? (0, 0, 0)
            r.brokers += 1
            r.clients += b.load.connections
            r.subscriptions += b.load.subscriptions
            regions[b.region] = r
        }
        return .object([
            "at": .int(wallMillis()),
            "controller": view.controller.map(JSONValue.string) ?? .null,
            "leader": view.leader.map(JSONValue.string) ?? .null,
            "epoch": .int(view.epoch ?? 0),
            "configVersion": .int(config.version),
            "controllers": .array(components.filter { $0.role == .controller }.map(\.json)),
            "brokers": .array(
                brokers.map { b in
                    var o = BrokerSummary(b).json.objectValue ?? [:]
                    if let v = running[b.id] { o["configVersion"] = .int(v) }
                    return .object(o)
                }),
            "gone": .array(gone.sorted { $0.key < $1.key }.map { .object(["id": .string($0.key), "at": .int($0.value)]) }),
            "regions": .array(
                regions.sorted { $0.key < $1.key }.map { name, r in
                    .object([
                        "region": .string(name), "brokers": .int(Int64(r.brokers)), "clients": .int(Int64(r.clients)),
                        "subscriptions": .int(Int64(r.subscriptions)),
                    ])
                }),
            "timeline": .array(samples.map(\.json)),
            "events": .array(events.reversed().map(\.json)),
            "commands": .array(commands.reversed().map(\.json)),
            "configChanges": .array(config.history.suffix(10).reversed().map(\.json)),
        ])
    }
}
