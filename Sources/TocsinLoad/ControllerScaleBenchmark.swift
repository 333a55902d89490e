import TocsinCore

/// The controller's decisions at internet scale, in this process, through the core's pure
/// types (`ControllerStateMachine`, `Placement`, `Rebalancer`): for each network size, brokers
/// in 10 regions registered, heartbeats carrying 10^7 clients spread over them, `assign` for
/// fresh clients (no hint, and by location), and the tick that plans a rebalance after one more
/// broker joins empty. Each call timed on its own (`tocsin bench controller`).
public enum ControllerScaleBenchmark {
    public struct Row: Sendable {
        public var brokers: Int
        public var clients: Int
        public var registerMicros: Double
        public var heartbeat: LatencyDistribution
        public var assign: LatencyDistribution
        public var assignByLocation: LatencyDistribution
        public var tickMillis: Double
        public var moves: Int
        public var moved: Int
        /// The fewest clients that must move to bring every broker to its share.
        public var needed: Int
    }

    public static func run(sizes: [Int] = [10, 100, 1000], clients: Int = 10_000_000, assigns: Int = 100_000) throws(TocsinError) -> [Row] {
        try sizes.map { n throws(TocsinError) in try measure(brokers: n, clients: clients, assigns: assigns) }
    }

    static func request(_ i: Int, region: Int) -> RegistrationRequest {
        RegistrationRequest(
            id: "broker-\(i + 1)", incarnation: "i\(i)", webSocketURL: "ws://10.\(i / 250).\(i % 250).1:7400/v1/ws",
            httpURL: "http://10.\(i / 250).\(i % 250).1:7400", region: "r\(region)",
            // Room for all of them on one: capacity never decides here, load does.
            location: GeoPoint(lat: -40 + Double(region) * 9, lon: -150 + Double(region) * 30), capacity: 100_000_000)
    }

    static func measure(brokers n: Int, clients: Int, assigns: Int) throws(TocsinError) -> Row {
        var machine = ControllerStateMachine(configuration: .init(leaseDuration: .seconds(3600), rebalanceCooldown: .seconds(3)))
        var now: ClusterTime = .seconds(1)
        let registerStart = Monotonic.nanos()
        for i in 0..<n { _ = try machine.register(request(i, region: i % 10), now: now) }
        let registerMicros = Double(Monotonic.nanos() - registerStart) / 1000 / Double(n)
        // Heartbeats: every broker reports its share of the clients, several rounds.
        var beats: [Int64] = []
        let share = clients / n
        for round in 0..<max(3, 20_000 / n) {
            now += .milliseconds(500)
            for i in 0..<n {
                let load = BrokerLoad(connections: share + (round % 2), subscriptions: share * 2)
                let start = Monotonic.nanos()
                _ = try machine.heartbeat(id: "broker-\(i + 1)", incarnation: "i\(i)", load: load, now: now)
                beats.append(Monotonic.nanos() - start)
            }
        }
        var assignSamples: [Int64] = []
        var located: [Int64] = []
        assignSamples.reserveCapacity(assigns)
        located.reserveCapacity(assigns)
        for i in 0..<assigns {
            let start = Monotonic.nanos()
            _ = try machine.assign(AssignmentRequest(clientID: "client-\(i)"), now: now)
            assignSamples.append(Monotonic.nanos() - start)
            let r = i % 10
            let near = AssignmentRequest(clientID: "located-\(i)", location: GeoPoint(lat: -40 + Double(r) * 9 + 1, lon: -150 + Double(r) * 30 + 1))
            let s = Monotonic.nanos()
            _ = try machine.assign(near, now: now)
            located.append(Monotonic.nanos() - s)
        }
        // One more broker joins, empty: the tick that plans moving clients onto it.
        _ = try machine.register(request(n, region: n % 10), now: now)
        for _ in 0..<8 {
            now += .milliseconds(500)
            for i in 0..<n {
                _ = try machine.heartbeat(id: "broker-\(i + 1)", incarnation: "i\(i)", load: BrokerLoad(connections: share), now: now)
            }
            _ = try machine.heartbeat(id: "broker-\(n + 1)", incarnation: "i\(n)", load: BrokerLoad(connections: 0), now: now)
        }
        var tickMillis = 0.0
        var plan = RebalancePlan()
        for _ in 0..<10 {
            now += .seconds(4)
            let start = Monotonic.nanos()
            let facts = machine.tick(now: now)
            let took = Double(Monotonic.nanos() - start) / 1e6
            for case .planned(let p) in facts where plan.moves.isEmpty {
                plan = p
                tickMillis = took
            }
            if !plan.moves.isEmpty { break }
        }
        let total = share * n
        let target = total / (n + 1)
        return Row(
            brokers: n, clients: total, registerMicros: registerMicros, heartbeat: LatencyDistribution(beats),
            assign: LatencyDistribution(assignSamples), assignByLocation: LatencyDistribution(located), tickMillis: tickMillis,
            moves: plan.moves.count, moved: plan.totalClients, needed: target)
    }

    /// The table `tocsin bench controller` prints.
    public static func table(_ rows: [Row]) -> String {
        func ns(_ d: LatencyDistribution, _ q: Double) -> String { "\(d.at(q) ?? 0)" }
        var lines = [
            "brokers  clients      register/broker  heartbeat p50/p99 ns  assign p50/p99 ns  by location p50/p99 ns  plan (one broker joins)",
        ]
        for r in rows {
            lines.append(
                String(r.brokers).padding(toLength: 9, withPad: " ", startingAt: 0)
                    + String(r.clients).padding(toLength: 13, withPad: " ", startingAt: 0)
                    + String(format: "%.1f µs", r.registerMicros).padding(toLength: 17, withPad: " ", startingAt: 0)
                    + "\(ns(r.heartbeat, 0.5)) / \(ns(r.heartbeat, 0.99))".padding(toLength: 22, withPad: " ", startingAt: 0)
                    + "\(ns(r.assign, 0.5)) / \(ns(r.assign, 0.99))".padding(toLength: 19, withPad: " ", startingAt: 0)
                    + "\(ns(r.assignByLocation, 0.5)) / \(ns(r.assignByLocation, 0.99))".padding(toLength: 24, withPad: " ", startingAt: 0)
                    + String(format: "%.2f ms, %d moves, %d clients (the new broker's share: %d)", r.tickMillis, r.moves, r.moved, r.needed))
        }
        return lines.joined(separator: "\n")
    }
}
