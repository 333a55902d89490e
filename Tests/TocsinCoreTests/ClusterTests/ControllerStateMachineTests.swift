import Testing

@testable import TocsinCore

/// The controller's policy driven directly, with literal times: leases, orders, cooldown, drain.
@Suite struct ControllerStateMachineTests {
    typealias F = ClusterFixture
    typealias Machine = ControllerStateMachine

    /// Leases of 3 s, a cooldown of 1 s, default tolerances (±5 clients or ±10%).
    static func machine(rebalanceEnabled: Bool = true) -> Machine {
        Machine(configuration: .init(leaseDuration: .seconds(3), rebalanceCooldown: .seconds(1), rebalanceEnabled: rebalanceEnabled))
    }

    static func registration(_ id: String, incarnation: String? = nil) -> RegistrationRequest {
        F.registration(
            id: id, incarnation: incarnation ?? "\(id)-1", webSocketURL: "ws://\(id).example:8080/v1/ws", httpURL: "http://\(id).example:8080")
    }

    /// Registers the brokers at `now`.
    static func register(_ m: inout Machine, _ ids: [String], now: ClusterTime = .zero) throws {
        for id in ids { _ = try m.register(registration(id), now: now) }
    }

    /// Every broker reports its clients at `now`; returns the orders each got.
    @discardableResult
    static func report(_ m: inout Machine, _ loads: [String: Int], migrating: [String: Int] = [:], now: ClusterTime) throws
        -> [String: [MigrateCommand]]
    {
        var orders: [String: [MigrateCommand]] = [:]
        for (id, connections) in loads.sorted(by: { $0.key < $1.key }) {
            let load = BrokerLoad(connections: connections, migrating: migrating[id] ?? 0)
            orders[id] = try m.heartbeat(id: id, incarnation: "\(id)-1", load: load, now: now)
        }
        return orders
    }

    /// b1 with 90 clients and b2 with 10, settled since 0: at 1 s, b1 has orders waiting.
    static func unbalancedWithOrders() throws -> Machine {
        var m = machine()
        try register(&m, ["b1", "b2"])
        try report(&m, ["b1": 90, "b2": 10], now: .zero)
        _ = m.tick(now: .zero)
        _ = m.tick(now: .seconds(1))
        return m
    }

    static func plans(_ facts: [Machine.Fact]) -> [RebalancePlan] {
        facts.compactMap { if case .planned(let plan) = $0 { plan } else { nil } }
    }

    static func expired(_ facts: [Machine.Fact]) -> [String] {
        facts.compactMap { if case .expired(let record) = $0 { record.id } else { nil } }
    }

    // MARK: Leases

    @Test func aLeaseExpiresAtItsEndAndTheTickSaysSo() throws {
        var m = Self.machine()
        let facts = try m.register(Self.registration("b1"), now: .zero)
        guard case .registered(let record) = try #require(facts.first) else { Issue.record("not registered: \(facts)"); return }
        #expect(record.leaseExpiresAt == .seconds(3))
        try Self.report(&m, ["b1": 4], now: .seconds(2))
        #expect(m.tick(now: .milliseconds(4_999)) == [.counted(active: 1, draining: 0, clients: 4)])
        let at5 = m.tick(now: .seconds(5))
        #expect(Self.expired(at5) == ["b1"])
        #expect(at5.contains(.counted(active: 0, draining: 0, clients: 0)))
        #expect(m.live.isEmpty)
    }

    @Test func aHeartbeatAfterExpiryIsRefusedAndChangesNothing() throws {
        var m = Self.machine()
        try Self.register(&m, ["b1"])
        // Lapsed, not yet expired by a tick: refused all the same.
        F.expectError(.unknownBroker) { () throws(TocsinError) in
            try m.heartbeat(id: "b1", incarnation: "b1-1", load: .zero, now: .seconds(3))
        }
        #expect(Self.expired(m.tick(now: .seconds(3))) == ["b1"])
        F.expectError(.unknownBroker) { () throws(TocsinError) in
            try m.heartbeat(id: "b1", incarnation: "b1-1", load: .zero, now: .seconds(4))
        }
        F.expectError(.unknownBroker) { () throws(TocsinError) in try m.drain(id: "b1", incarnation: "b1-1", now: .seconds(4)) }
        #expect(m.live.isEmpty)
        // Registering again is the way back.
        #expect(try m.register(Self.registration("b1"), now: .seconds(4)).count == 1)
        #expect(try m.heartbeat(id: "b1", incarnation: "b1-1", load: .zero, now: .seconds(5)).isEmpty)
    }

    @Test func aNewIncarnationReplacesTheOldOneAndItsOrders() throws {
        var m = try Self.unbalancedWithOrders()
        #expect(m.orders["b1"]?.map(\.count) == [35])
        // b1 restarts before its next heartbeat: the old incarnation's orders die with it.
        let facts = try m.register(Self.registration("b1", incarnation: "b1-2"), now: .milliseconds(1_100))
        guard case .restarted(let record, let replaced) = try #require(facts.first) else { Issue.record("\(facts)"); return }
        #expect(record.incarnation == "b1-2")
        #expect(replaced.incarnation == "b1-1")
        #expect(m.orders["b1"] == nil)
        F.expectError(.staleIncarnation) { () throws(TocsinError) in
            try m.heartbeat(id: "b1", incarnation: "b1-1", load: .zero, now: .milliseconds(1_200))
        }
        #expect(try m.heartbeat(id: "b1", incarnation: "b1-2", load: .zero, now: .milliseconds(1_200)).isEmpty)
        // The same incarnation registering again is a retry: said again, nothing replaced.
        #expect(try m.register(Self.registration("b1", incarnation: "b1-2"), now: .milliseconds(1_300)) == [.registered(m.live[0])])
    }

    // MARK: Planning

    @Test func ordersAreHandedOutOnceAndTheCooldownHoldsTheNextPlanBack() throws {
        var m = Self.machine()
        try Self.register(&m, ["b1", "b2"])
        try Self.report(&m, ["b1": 90, "b2": 10], now: .zero)
        // The first tick has no history: the network must look settled for a cooldown.
        #expect(Self.plans(m.tick(now: .zero)).isEmpty)
        #expect(Self.plans(m.tick(now: .milliseconds(999))).isEmpty)
        let facts = m.tick(now: .seconds(1))
        #expect(Self.plans(facts) == [RebalancePlan(moves: [Move(from: "b1", to: "b2", count: 35)])])
        #expect(m.lastPlanAt == .seconds(1))
        let first = try Self.report(&m, ["b1": 90, "b2": 10], now: .milliseconds(1_100))
        #expect(first["b1"]?.map(\.count) == [35])
        #expect(first["b1"]?.first?.to.id == "b2")
        #expect(first["b1"]?.first?.reason == "rebalance")
        #expect(first["b2"] == [])
        // Handed out once.
        #expect(try Self.report(&m, ["b1": 90, "b2": 10], now: .milliseconds(1_200)) == ["b1": [], "b2": []])
        // Not moved yet, but cooling down: no second plan.
        #expect(Self.plans(m.tick(now: .milliseconds(1_500))).isEmpty)
        #expect(m.orders.isEmpty)
        // Moved: balanced, nothing to plan after the cooldown either.
        try Self.report(&m, ["b1": 55, "b2": 45], now: .seconds(2))
        #expect(Self.plans(m.tick(now: .seconds(2))).isEmpty)
        #expect(Self.plans(m.tick(now: .seconds(3))).isEmpty)
    }

    @Test func noPlanWhileClientsArriveInNumbersOrAreStillMigrating() throws {
        var m = Self.machine()
        try Self.register(&m, ["b1", "b2"])
        // A connect storm: the total grows faster than the tolerance between ticks.
        var now = ClusterTime.zero
        for total in stride(from: 20, through: 100, by: 20) {
            try Self.report(&m, ["b1": total, "b2": 0], now: now)
            #expect(Self.plans(m.tick(now: now)).isEmpty)
            now += .milliseconds(500)
        }
        // Settled, but 10 clients are in flight from earlier orders.
        try Self.report(&m, ["b1": 90, "b2": 0], migrating: ["b1": 10], now: now)
        now += .seconds(1)
        try Self.report(&m, ["b1": 90, "b2": 0], migrating: ["b1": 10], now: now)
        #expect(Self.plans(m.tick(now: now)).isEmpty)
        // They landed: now the imbalance is planned for.
        try Self.report(&m, ["b1": 90, "b2": 10], now: now)
        #expect(Self.plans(m.tick(now: now)).map(\.totalClients) == [35])
    }

    @Test func aDrainDuringARebalanceIsPlannedAtOnceAndStaleOrdersAreDropped() throws {
        var m = Self.machine()
        try Self.register(&m, ["b1", "b2", "b3"])
        try Self.report(&m, ["b1": 90, "b2": 10, "b3": 20], now: .zero)
        _ = m.tick(now: .zero)
        let rebalance = try #require(Self.plans(m.tick(now: .seconds(1))).first)
        #expect(Set(rebalance.moves.map(\.to)) == ["b2", "b3"])
        // Before b1 collects its orders, b2 starts draining: inside the cooldown, and with the
        // total not re-checked, its clients are planned for at once.
        let facts = try m.drain(id: "b2", incarnation: "b2-1", now: .milliseconds(1_100))
        #expect(facts.first == .draining(id: "b2"))
        let drain = try #require(Self.plans(facts).first)
        #expect(drain.moves.filter { $0.from == "b2" }.map(\.count).reduce(0, +) == 10)
        #expect(!drain.moves.contains { $0.to == "b2" })
        #expect(m.lastPlanAt == .milliseconds(1_100))
        // b1's order to b2 (now draining) is dropped; the others are handed out.
        let orders = try Self.report(&m, ["b1": 90, "b2": 10, "b3": 20], now: .milliseconds(1_200))
        #expect(orders["b1"]?.isEmpty == false)
        #expect(orders["b1"]?.allSatisfy { $0.to.id == "b3" } == true)
        #expect(orders["b2"]?.allSatisfy { $0.reason == "drain" && $0.to.id != "b2" } == true)
        #expect(orders["b2"]?.map(\.count).reduce(0, +) == 10)
        // A draining broker is never assigned a client.
        for i in 0..<10 {
            #expect(try m.assign(AssignmentRequest(clientID: "c\(i)"), now: .milliseconds(1_300)).broker.id != "b2")
        }
    }

    @Test func anOrderToADeadOrRestartedTargetIsDropped() throws {
        var m = Self.machine()
        // b2 registers at 0 and never renews: its lease ends at 3 s.
        try Self.register(&m, ["b2"])
        try Self.register(&m, ["b1", "b3"], now: .seconds(1))
        try Self.report(&m, ["b1": 90, "b3": 10], now: .seconds(1))
        _ = m.tick(now: .seconds(1))
        #expect(!Self.plans(m.tick(now: .seconds(2))).isEmpty)
        #expect(Set(m.orders["b1"]?.map(\.to.id) ?? []) == ["b2", "b3"])
        // b3 restarts, and b2 dies, before b1 comes for its orders.
        _ = try m.register(Self.registration("b3", incarnation: "b3-2"), now: .milliseconds(2_500))
        #expect(Self.expired(m.tick(now: .seconds(3))) == ["b2"])
        #expect(try m.heartbeat(id: "b1", incarnation: "b1-1", load: BrokerLoad(connections: 90), now: .milliseconds(3_500)).isEmpty)
    }

    @Test func withRebalancingOffOnlyDrainsArePlanned() throws {
        var m = Self.machine(rebalanceEnabled: false)
        try Self.register(&m, ["b1", "b2", "b3"])
        try Self.report(&m, ["b1": 90, "b2": 10, "b3": 20], now: .zero)
        _ = m.tick(now: .zero)
        #expect(Self.plans(m.tick(now: .seconds(2))).isEmpty)
        let plan = try #require(Self.plans(try m.drain(id: "b3", incarnation: "b3-1", now: .seconds(2))).first)
        #expect(plan.moves.allSatisfy { $0.from == "b3" })
        #expect(plan.totalClients == 20)
        #expect(m.orders.keys.sorted() == ["b3"])
    }

    @Test func aDeregisteredBrokerLeavesWithItsOrders() throws {
        var m = try Self.unbalancedWithOrders()
        #expect(m.orders["b1"] != nil)
        F.expectError(.staleIncarnation) { () throws(TocsinError) in try m.deregister(id: "b1", incarnation: "b1-0") }
        #expect(try m.deregister(id: "b1", incarnation: "b1-1") == [.deregistered(id: "b1")])
        #expect(m.orders["b1"] == nil)
        #expect(m.live.map(\.id) == ["b2"])
    }
}

/// A follower or a new leader taking over the registry the leader wrote to the store.
@Suite struct ControllerTakeoverTests {
    @Test func adoptedBrokersAreLeasedFromNowAndExpireUnlessTheyHeartbeat() throws {
        var old = ControllerStateMachineTests.machine()
        try ControllerStateMachineTests.register(&old, ["b1", "b2"])
        try ControllerStateMachineTests.report(&old, ["b1": 90, "b2": 10], now: .zero)
        var m = ControllerStateMachineTests.machine()
        m.adopt(old.live.map(BrokerSummary.init), now: .seconds(10))
        #expect(m.live.map(\.id) == ["b1", "b2"])
        #expect(m.live.map(\.leaseExpiresAt) == [.seconds(13), .seconds(13)])
        #expect(m.live.first?.load.connections == 90)
        // Assignment works from the adopted registry at once.
        #expect(try m.assign(AssignmentRequest(clientID: "c1"), now: .seconds(10)).broker.id == "b2")
        // b1 heartbeats the new leader in time, b2 does not.
        #expect(try m.heartbeat(id: "b1", incarnation: "b1-1", load: BrokerLoad(connections: 90), now: .seconds(12)).isEmpty)
        #expect(ControllerStateMachineTests.expired(m.tick(now: .seconds(13))) == ["b2"])
        #expect(m.live.map(\.id) == ["b1"])
    }

    @Test func noRebalanceIsPlannedBeforeTheNetworkSettledUnderTheNewLeader() throws {
        var old = try ControllerStateMachineTests.unbalancedWithOrders()
        #expect(old.orders["b1"] != nil)
        var m = ControllerStateMachineTests.machine()
        m.adopt(old.live.map(BrokerSummary.init), now: .seconds(10))
        #expect(m.orders.isEmpty)
        #expect(ControllerStateMachineTests.plans(m.tick(now: .seconds(10))).isEmpty)
        _ = try ControllerStateMachineTests.report(&m, ["b1": 90, "b2": 10], now: .milliseconds(10_500))
        #expect(ControllerStateMachineTests.plans(m.tick(now: .milliseconds(10_500))).isEmpty)
        #expect(ControllerStateMachineTests.plans(m.tick(now: .seconds(11))).count == 1)
    }
}
