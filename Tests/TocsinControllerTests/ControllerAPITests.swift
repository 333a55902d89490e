import Foundation
import Testing
import TocsinClient
import TocsinController
import TocsinCore
import TocsinTesting

/// The controller's HTTP API on a real socket, with a manual clock.
@Suite(.timeLimit(.minutes(1)))
struct ControllerAPITests {
    static func registration(_ id: String, port: Int, incarnation: String = UUID().uuidString, capacity: Int = 100) -> JSONValue {
        .object([
            "id": .string(id), "incarnation": .string(incarnation), "wsURL": .string("ws://127.0.0.1:\(port)/v1/ws"),
            "httpURL": .string("http://127.0.0.1:\(port)"), "region": .string("local"), "capacity": .int(Int64(capacity)),
        ])
    }

    static func heartbeat(incarnation: String, connections: Int) -> JSONValue {
        .object(["incarnation": .string(incarnation), "load": .object(["connections": .int(Int64(connections))])])
    }

    static func cluster(_ c: TestController) async throws -> ClusterView {
        try ClusterView(json: try await HTTPCall.call(.GET, c.url + "/v1/cluster"))
    }

    static func expectError(_ reply: HTTPCall.Reply, status: Int, code: TocsinError.Code) {
        #expect(reply.status == status)
        #expect(reply.body["error"]?["code"]?.stringValue == code.rawValue)
        #expect((reply.body["error"]?["message"]?.stringValue ?? "").count > 5)
    }

    @Test func registerHeartbeatDiscoverAssign() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            let reply = try LeaseReply(json: try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "i1")))
            #expect(reply.leaseMillis == 3000)
            #expect(reply.cluster?.brokers.map(\.id) == ["b1"])
            #expect(reply.cluster?.controller == c.url)
            let beat = try LeaseReply(json: try await HTTPCall.call(.POST, c.url + "/v1/brokers/b1/heartbeat", body: Self.heartbeat(incarnation: "i1", connections: 7)))
            #expect(beat.commands.isEmpty)
            let view = try await Self.cluster(c)
            #expect(view.brokers.first?.load.connections == 7)
            let assigned = try AssignReply(json: try await HTTPCall.call(.GET, c.url + "/v1/assign?client=alice&lat=52.1&lon=4.3"))
            #expect(assigned.broker.id == "b1")
            #expect(assigned.broker.webSocketURL == "ws://127.0.0.1:9001/v1/ws")
        }
    }

    /// A heartbeat's reply leaves the discovery list out for a broker that holds its version, and
    /// sends it again when a broker joins, one changes state, or the list is 5 s old.
    @Test func heartbeatRepliesCarryTheDiscoveryListOnlyWhenItChanged() async throws {
        let clock = ManualClock()
        try await TestController.with(clock: clock) { c in
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "i1"))
            func beat(_ known: Int64?) async throws -> LeaseReply {
                var body = Self.heartbeat(incarnation: "i1", connections: 7)
                if let known, case .object(var o) = body {
                    o["viewVersion"] = .int(known)
                    body = .object(o)
                }
                return try LeaseReply(json: try await HTTPCall.call(.POST, c.url + "/v1/brokers/b1/heartbeat", body: body))
            }
            let first = try await beat(nil)
            let version = try #require(first.viewVersion)
            #expect(first.cluster?.brokers.map(\.id) == ["b1"], "no version held: the list")
            let same = try await beat(version)
            #expect(same.cluster == nil && same.viewVersion == version, "the version held: no list")
            #expect(try await beat(version - 1).cluster != nil, "another version: the list")
            // A broker joins: a new version, with it in the list (lists are built at most every 250 ms).
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b2", port: 9002, incarnation: "i2"))
            clock.advance(by: .milliseconds(250))
            let joined = try await beat(version)
            #expect(joined.cluster?.brokers.map(\.id) == ["b1", "b2"])
            let newer = try #require(joined.viewVersion)
            #expect(newer != version)
            #expect(try await beat(newer).cluster == nil)
            // The loads it carries are refreshed every 5 s (heartbeats keep the lease meanwhile).
            for _ in 0..<2 {
                clock.advance(by: .seconds(2))
                #expect(try await beat(newer).cluster == nil)
            }
            clock.advance(by: .seconds(1))
            #expect(try await beat(newer).cluster?.brokers.first?.load.connections == 7)
            // A reply without the list still decodes only with a version (older controllers always send it).
            #expect(throws: TocsinError.self) { _ = try LeaseReply(json: ["leaseMillis": 3000, "heartbeatMillis": 500, "epoch": 0]) }
        }
    }

    @Test func badInputGetsClearErrorsAndChangesNothing() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "i1"))
            let before = try await Self.cluster(c)

            Self.expectError(try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: "{not json"), status: 400, code: .badJSON)
            Self.expectError(try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: "[1,2]"), status: 422, code: .invalidRegistration)
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: #"{"id":"b2","incarnation":"x"}"#), status: 422, code: .invalidRegistration)
            var badURL = Self.registration("b2", port: 9002)
            if case .object(var o) = badURL { o["wsURL"] = .string("ftp://somewhere"); badURL = .object(o) }
            Self.expectError(try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: badURL.serialized), status: 422, code: .invalidRegistration)
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: Self.registration("b2", port: 9002, capacity: 0).serialized),
                status: 422, code: .invalidRegistration)
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: Self.registration("bad id!", port: 9002).serialized),
                status: 422, code: .invalidRegistration)
            // A broker claiming a live broker's id from another address.
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: Self.registration("b1", port: 9999).serialized),
                status: 409, code: .brokerIDInUse)
            // An unknown broker heartbeating, a stale incarnation, a malformed load.
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers/ghost/heartbeat", rawBody: Self.heartbeat(incarnation: "g", connections: 1).serialized),
                status: 404, code: .unknownBroker)
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers/b1/heartbeat", rawBody: Self.heartbeat(incarnation: "old", connections: 1).serialized),
                status: 409, code: .staleIncarnation)
            Self.expectError(
                try await HTTPCall.send(
                    .POST, c.url + "/v1/brokers/b1/heartbeat", rawBody: #"{"incarnation":"i1","load":{"connections":-3}}"#),
                status: 400, code: .badRequest)
            Self.expectError(try await HTTPCall.send(.DELETE, c.url + "/v1/brokers/b1?incarnation=nope"), status: 409, code: .staleIncarnation)
            // Bad assignment questions.
            Self.expectError(try await HTTPCall.send(.GET, c.url + "/v1/assign"), status: 400, code: .badRequest)
            Self.expectError(try await HTTPCall.send(.GET, c.url + "/v1/assign?client=a&lat=52"), status: 400, code: .badRequest)
            Self.expectError(try await HTTPCall.send(.GET, c.url + "/v1/assign?client=a&lat=95&lon=3"), status: 400, code: .badRequest)

            let after = try await Self.cluster(c)
            #expect(after == before)
        }
    }

    @Test func aRestartedBrokerIsANewIncarnation() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "first"))
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "second"))
            #expect(try await Self.cluster(c).brokers.map(\.incarnation) == ["second"])
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers/b1/heartbeat", rawBody: Self.heartbeat(incarnation: "first", connections: 0).serialized),
                status: 409, code: .staleIncarnation)
        }
    }

    @Test func anExpiredBrokerIsDeadAndNeverAssigned() async throws {
        let clock = ManualClock()
        try await TestController.with(clock: clock) { c in
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "i1"))
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b2", port: 9002, incarnation: "i2"))
            clock.advance(by: .seconds(2))
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers/b2/heartbeat", body: Self.heartbeat(incarnation: "i2", connections: 0))
            clock.advance(by: .milliseconds(1500))  // b1 is 3.5 s silent, b2 1.5 s
            c.controller.tick()
            #expect(try await Self.cluster(c).brokers.map(\.id) == ["b2"])
            for i in 0..<50 {
                let a = try AssignReply(json: try await HTTPCall.call(.GET, c.url + "/v1/assign?client=c\(i)"))
                #expect(a.broker.id == "b2")
            }
            Self.expectError(
                try await HTTPCall.send(.POST, c.url + "/v1/brokers/b1/heartbeat", rawBody: Self.heartbeat(incarnation: "i1", connections: 0).serialized),
                status: 404, code: .unknownBroker)
            clock.advance(by: .seconds(4))
            c.controller.tick()
            Self.expectError(try await HTTPCall.send(.GET, c.url + "/v1/assign?client=x"), status: 503, code: .noBrokerAvailable)
        }
    }

    @Test func assignIsStickyOnAnIdleNetworkAndDifferentClientsSpread() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            for i in 1...3 {
                _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b\(i)", port: 9000 + i, incarnation: "i\(i)"))
            }
            var named: Set<String> = []
            for round in 0..<50 {
                named.insert(try AssignReply(json: try await HTTPCall.call(.GET, c.url + "/v1/assign?client=alice")).broker.id)
                if round == 25 {
                    // Idle brokers report no clients (alice never connected): still the same broker.
                    for i in 1...3 {
                        _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers/b\(i)/heartbeat", body: Self.heartbeat(incarnation: "i\(i)", connections: 0))
                    }
                }
            }
            #expect(named.count == 1, "\(named)")
            var spread: [String: Int] = [:]
            for i in 0..<30 {
                let id = try AssignReply(json: try await HTTPCall.call(.GET, c.url + "/v1/assign?client=client-\(i)")).broker.id
                spread[id, default: 0] += 1
            }
            #expect(spread.count == 3, "\(spread)")
            #expect(spread.values.allSatisfy { $0 <= 14 }, "\(spread)")
        }
    }

    /// Two brokers reporting these loads (connections, clients told to migrate); returns b1's lease reply.
    @discardableResult
    static func report(_ c: TestController, b1: Int, b2: Int, b1Migrating: Int = 0) async throws -> LeaseReply {
        let reply = try LeaseReply(
            json: try await HTTPCall.call(
                .POST, c.url + "/v1/brokers/b1/heartbeat",
                body: ["incarnation": "i1", "load": ["connections": .int(Int64(b1)), "migrating": .int(Int64(b1Migrating))]]))
        _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers/b2/heartbeat", body: Self.heartbeat(incarnation: "i2", connections: b2))
        return reply
    }

    static func twoBrokers(_ c: TestController) async throws {
        _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "i1"))
        _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b2", port: 9002, incarnation: "i2"))
    }

    /// A one-second cooldown, so the manual clock can pass it without expiring 3-second leases.
    static func shortCooldown(_ configuration: inout ControllerConfiguration) {
        configuration.rebalanceCooldown = .seconds(1)
    }

    @Test func anUnbalancedNetworkGetsMigrateOrdersInHeartbeats() async throws {
        let clock = ManualClock()
        try await TestController.with(clock: clock, Self.shortCooldown) { c in
            try await Self.twoBrokers(c)
            try await Self.report(c, b1: 90, b2: 10)
            c.controller.tick()
            // The first tick has no history yet: the network must look settled for a cooldown.
            #expect(try await Self.report(c, b1: 90, b2: 10).commands.isEmpty)
            clock.advance(by: .seconds(1))
            c.controller.tick()
            let orders = try await Self.report(c, b1: 90, b2: 10)
            #expect(orders.commands.count == 1)
            let order = try #require(orders.commands.first)
            #expect(order.to.id == "b2")
            #expect(order.reason == "rebalance")
            // Mean 50, band ±5: b1 must come down to 55 at least: 35 clients.
            #expect(order.count == 35)
            // Orders are handed out once; the cooldown holds the next plan back; once moved, all is quiet.
            #expect(try await Self.report(c, b1: 90, b2: 10).commands.isEmpty)
            c.controller.tick()
            #expect(try await Self.report(c, b1: 55, b2: 45).commands.isEmpty)
            clock.advance(by: .seconds(1))
            c.controller.tick()
            #expect(try await Self.report(c, b1: 55, b2: 45).commands.isEmpty)
        }
    }

    @Test func noPlanWhileClientsAreStillMigratingOrArrivingInNumbers() async throws {
        let clock = ManualClock()
        try await TestController.with(clock: clock, Self.shortCooldown) { c in
            try await Self.twoBrokers(c)
            // A connect storm: the total grows faster than the tolerance between ticks.
            for total in stride(from: 20, through: 100, by: 20) {
                try await Self.report(c, b1: total, b2: 0)
                c.controller.tick()
                clock.advance(by: .milliseconds(500))
            }
            #expect(try await Self.report(c, b1: 100, b2: 0).commands.isEmpty)
            // Settled, but 10 clients are still in flight from earlier orders.
            try await Self.report(c, b1: 90, b2: 0, b1Migrating: 10)
            clock.advance(by: .seconds(1))
            c.controller.tick()
            #expect(try await Self.report(c, b1: 90, b2: 0, b1Migrating: 10).commands.isEmpty)
            // They landed: now the imbalance is planned for.
            try await Self.report(c, b1: 90, b2: 10)
            c.controller.tick()
            #expect(try await Self.report(c, b1: 90, b2: 10).commands.map(\.count) == [35])
        }
    }

    @Test func aDrainingBrokerIsEmptiedAtOnceAndNotAssigned() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b1", port: 9001, incarnation: "i1"))
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers", body: Self.registration("b2", port: 9002, incarnation: "i2"))
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers/b1/heartbeat", body: Self.heartbeat(incarnation: "i1", connections: 12))
            _ = try await HTTPCall.call(.POST, c.url + "/v1/brokers/b1/drain", body: .object(["incarnation": .string("i1")]))
            let orders = try LeaseReply(json: try await HTTPCall.call(.POST, c.url + "/v1/brokers/b1/heartbeat", body: Self.heartbeat(incarnation: "i1", connections: 12)))
            #expect(orders.commands.map(\.count) == [12])
            #expect(orders.commands.first?.reason == "drain")
            for i in 0..<20 {
                #expect(try AssignReply(json: try await HTTPCall.call(.GET, c.url + "/v1/assign?client=c\(i)")).broker.id == "b2")
            }
            _ = try await HTTPCall.call(.DELETE, c.url + "/v1/brokers/b1?incarnation=i1")
            #expect(try await Self.cluster(c).brokers.map(\.id) == ["b2"])
        }
    }
}
