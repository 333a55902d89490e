import Testing

@testable import TocsinCore

/// `Placement.reserve`: sticky assignment with reservations that reports reconcile and time expires.
@Suite struct ReservationTests {
    typealias F = ClusterFixture

    static let three = (1...3).map { F.broker("b\($0)") }

    func reserve(_ placement: inout Placement, _ client: String, at seconds: Int = 0, exclude: Set<String> = []) throws -> String {
        try placement.reserve(AssignmentRequest(clientID: client, exclude: exclude), now: .seconds(seconds)).broker.id
    }

    func total(_ placement: Placement, _ brokers: [BrokerRecord] = three) -> Int {
        brokers.reduce(0) { $0 + (placement.connections(of: $1.id) ?? 0) }
    }

    @Test func aClientAskingAgainOnAnIdleNetworkKeepsItsBrokerAndCountsOnce() throws {
        var placement = Placement(brokers: Self.three)
        let hashed = try placement.assign(AssignmentRequest(clientID: "alice")).broker.id
        for _ in 0..<50 {
            #expect(try reserve(&placement, "alice") == hashed)
        }
        #expect(placement.connections(of: hashed) == 1)
        #expect(total(placement) == 1)
        #expect(placement.reservationCount == 1)
    }

    @Test func differentClientsStillSpreadAndEachKeepsItsBroker() throws {
        var placement = Placement(brokers: Self.three)
        let clients = (0..<300).map { "client-\($0)" }
        var first: [String: String] = [:]
        for client in clients { first[client] = try reserve(&placement, client) }
        let counts = Dictionary(grouping: first.values, by: { $0 }).mapValues(\.count)
        #expect(counts.count == 3)
        #expect(counts.values.allSatisfy { $0 <= 126 }, "\(counts)")  // ceil(1.25 * 300 / 3) + 1
        for _ in 0..<3 {
            for client in clients { #expect(try reserve(&placement, client) == first[client]) }
        }
        #expect(total(placement) == 300)
    }

    @Test func aReportReplacesTheCountAndTheClientIsNotCountedTwice() throws {
        var placement = Placement(brokers: Self.three)
        let b = try reserve(&placement, "alice")
        // The broker reports no clients: alice has not connected; asking again counts her anew, once.
        placement.updateLoad(of: b, connections: 0)
        #expect(placement.connections(of: b) == 0)
        #expect(try reserve(&placement, "alice") == b)
        #expect(placement.connections(of: b) == 1)
        #expect(try reserve(&placement, "alice") == b)
        #expect(placement.connections(of: b) == 1)
        // She connected and is in the report: asking again (a reconnect) keeps her there, uncounted.
        placement.updateLoad(of: b, connections: 1)
        for _ in 0..<5 { #expect(try reserve(&placement, "alice") == b) }
        #expect(placement.connections(of: b) == 1)
        #expect(total(placement) == 1)
    }

    @Test func aBrokerOverItsBoundGivesTheClientUp() throws {
        var placement = Placement(brokers: Self.three)
        let b = try reserve(&placement, "alice")
        placement.updateLoad(of: b, connections: 100)
        // bound = ceil(1.25 * 100 / 3) = 42 with alice off b's count: b (99) is over it.
        let moved = try reserve(&placement, "alice")
        #expect(moved != b)
        #expect(placement.connections(of: b) == 99)
        #expect(placement.connections(of: moved) == 1)
        // And she stays on the new broker.
        #expect(try reserve(&placement, "alice") == moved)
        #expect(placement.connections(of: moved) == 1)
    }

    @Test func excludingTheRememberedBrokerMovesTheReservation() throws {
        var placement = Placement(brokers: Self.three)
        let b = try reserve(&placement, "alice")
        let other = try reserve(&placement, "alice", exclude: [b])
        #expect(other != b)
        #expect(placement.connections(of: b) == 0)
        #expect(placement.connections(of: other) == 1)
        #expect(try reserve(&placement, "alice") == other)
    }

    @Test func aFullBrokerStillKeepsTheClientItHolds() throws {
        let brokers = [F.broker("small", capacity: 1), F.broker("big", capacity: 100)]
        var placement = Placement(brokers: brokers)
        let client = try #require(
            (0..<1000).map { "c\($0)" }.first { (try? placement.assign(AssignmentRequest(clientID: $0)).broker.id) == "small" })
        for _ in 0..<10 { #expect(try reserve(&placement, client) == "small") }
        #expect(placement.connections(of: "small") == 1)
        #expect(try reserve(&placement, "someone-else") == "big")
    }

    @Test func aDrainingBrokerLosesItsReservationsOnRebuild() throws {
        var placement = Placement(brokers: Self.three)
        let b = try reserve(&placement, "alice")
        var brokers = Self.three
        brokers[try #require(brokers.firstIndex { $0.id == b })].state = .draining
        var rebuilt = Placement(brokers: brokers)
        rebuilt.carryReservations(from: placement)
        #expect(try reserve(&rebuilt, "alice") != b)
    }

    @Test func reservationsSurviveARebuildWithTheirCounts() throws {
        var placement = Placement(brokers: Self.three)
        let b = try reserve(&placement, "alice")
        let c = try reserve(&placement, "bob")
        placement.updateLoad(of: c, connections: 1)  // bob's broker reported: bob no longer counted as reserved
        var reported = Self.three
        reported[try #require(reported.firstIndex { $0.id == c })].load.connections = 1
        var rebuilt = Placement(brokers: reported)
        rebuilt.carryReservations(from: placement)
        #expect(rebuilt.reservationCount == 2)
        #expect(total(rebuilt) == 2)
        #expect(try reserve(&rebuilt, "alice") == b)
        #expect(try reserve(&rebuilt, "bob") == c)
        #expect(total(rebuilt) == 2)
        // A restarted broker (new incarnation) holds none of the old reservations.
        var restarted = Placement(
            brokers: (1...3).map { F.broker("b\($0)") }.map {
                BrokerRecord(
                    id: $0.id, incarnation: $0.incarnation + "-2", webSocketURL: $0.webSocketURL, httpURL: $0.httpURL, region: $0.region,
                    capacity: $0.capacity)
            })
        restarted.carryReservations(from: placement)
        #expect(restarted.reservationCount == 0)
        #expect(total(restarted) == 0)
    }

    @Test func reservationsExpireAndTakeTheirCountWithThem() throws {
        var placement = Placement(brokers: Self.three, policy: PlacementPolicy(reservationLifetime: .seconds(30)))
        for i in 0..<100 { _ = try reserve(&placement, "client-\(i)", at: 0) }
        #expect(total(placement) == 100)
        _ = try reserve(&placement, "late", at: 29)
        #expect(placement.reservationCount == 101)
        _ = try reserve(&placement, "later", at: 30)
        #expect(placement.reservationCount == 2)
        #expect(total(placement) == 2)
        // A repeat does not renew: "late" is forgotten at 59 s and counted afresh, once.
        _ = try reserve(&placement, "late", at: 59)
        #expect(placement.reservationCount == 2)
        #expect(total(placement) == 2)
    }

    @Test func aClientMovedOverAndOverIsCountedOnceAndRememberedOnce() throws {
        var placement = Placement(brokers: Self.three)
        var last = try reserve(&placement, "alice")
        for i in 0..<10_000 {
            let next = try reserve(&placement, "alice", at: i / 1000, exclude: [last])
            #expect(next != last)
            last = next
        }
        #expect(placement.reservationCount == 1)
        #expect(total(placement) == 1)
        #expect(placement.connections(of: last) == 1)
        // The stale entries of all those moves do not expire anything early or late.
        _ = try reserve(&placement, "bob", at: 39)
        #expect(placement.reservationCount == 1)
        #expect(total(placement) == 1)
    }

    @Test func theMemoryIsBoundedOldestFirst() throws {
        var placement = Placement(brokers: Self.three, policy: PlacementPolicy(maxReservations: 10))
        for i in 0..<25 { _ = try reserve(&placement, "client-\(i)") }
        #expect(placement.reservationCount == 10)
        // Forgotten reservations still count until their broker reports (a connect storm keeps spreading).
        #expect(total(placement) == 25)
        for i in 0..<5000 { _ = try reserve(&placement, "more-\(i % 40)") }
        #expect(placement.reservationCount == 10)
    }
}
