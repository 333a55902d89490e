import Testing

@testable import TocsinCore

@Suite struct PlacementTests {
    typealias F = ClusterFixture

    static let clientIDs = (0..<10_000).map { "client-\($0)" }

    /// Primary broker id for each client id (with zero loads, nothing is noted).
    func primaries(_ placement: Placement, _ clients: [String] = clientIDs) throws -> [String] {
        try clients.map { try placement.assign(AssignmentRequest(clientID: $0)).broker.id }
    }

    // MARK: - Hash stability

    @Test func stableHashIsPinned() {
        // Values computed with an independent implementation (FNV-1a 64 + fmix64) when pinned.
        // These literals pin the hash function. If this test fails, the hash changed, and every client of
        // every cluster would move to another broker on upgrade: do not "fix" the literals.
        #expect(StableHash.hash("") == 0xefd0_1f60_ba99_2926)
        #expect(StableHash.hash("client-42") == 0xc456_11be_9bd9_112b)
        #expect(StableHash.hash("b1#0") == 0xeb08_917d_750c_2ba6)
    }

    @Test func assignmentIsPinned() throws {
        // Ring construction + hash + walk, end to end: a change here reshuffles real clusters.
        let placement = Placement(brokers: ["b1", "b2", "b3", "b4"].map { F.broker($0) })
        let got = try ["alice", "bob", "carol", "dave", "erin"].map { try placement.assign(AssignmentRequest(clientID: $0)).broker.id }
        #expect(got == ["b1", "b1", "b2", "b3", "b4"])  // computed independently (Python) when pinned
    }

    // MARK: - Determinism and stability

    @Test func sameMembershipGivesTheSameAnswer() throws {
        let brokers = (1...7).map { F.broker("b\($0)") }
        let placement = Placement(brokers: brokers)
        var rng = SplitMix(seed: 7)
        let shuffled = Placement(brokers: brokers.shuffled(using: &rng))
        let clients = Array(Self.clientIDs.prefix(2000))
        let first = try primaries(placement, clients)
        #expect(try primaries(placement, clients) == first)
        #expect(try primaries(shuffled, clients) == first)
        let a = try placement.assign(AssignmentRequest(clientID: "x"))
        let b = try shuffled.assign(AssignmentRequest(clientID: "x"))
        #expect(a == b)
    }

    @Test(arguments: [1, 2, 4, 5, 9])
    func addingABrokerMovesAboutOneOverNPlusOne(n: Int) throws {
        let before = try primaries(Placement(brokers: (1...n).map { F.broker("b\($0)") }))
        let after = try primaries(Placement(brokers: (1...(n + 1)).map { F.broker("b\($0)") }))
        var moved = 0
        for (old, new) in zip(before, after) where old != new {
            moved += 1
            #expect(new == "b\(n + 1)", "a client moved between two old brokers: \(old) -> \(new)")
        }
        let fraction = Double(moved) / Double(Self.clientIDs.count)
        #expect(fraction <= 1.5 / Double(n + 1), "moved \(fraction)")
        #expect(fraction >= 0.5 / Double(n + 1), "moved \(fraction)")
    }

    @Test func removingABrokerMovesOnlyItsClients() throws {
        let all = (1...6).map { F.broker("b\($0)") }
        let before = try primaries(Placement(brokers: all))
        let after = try primaries(Placement(brokers: all.filter { $0.id != "b3" }))
        var moved = 0
        for (old, new) in zip(before, after) where old != new {
            moved += 1
            #expect(old == "b3")
        }
        #expect(moved == before.filter { $0 == "b3" }.count)
    }

    @Test func brokerStartingToDrainMovesOnlyItsClients() throws {
        var all = (1...6).map { F.broker("b\($0)") }
        let before = try primaries(Placement(brokers: all))
        all[1].state = .draining
        let after = try primaries(Placement(brokers: all))
        for (old, new) in zip(before, after) where old != new { #expect(old == "b2") }
        #expect(!after.contains("b2"))
    }

    // MARK: - Bounded loads and capacity

    @Test func loadsStayWithinTheBound() throws {
        var placement = Placement(brokers: (1...5).map { F.broker("b\($0)") })
        var counts: [String: Int] = [:]
        for client in Self.clientIDs {
            let id = try placement.assign(AssignmentRequest(clientID: client)).broker.id
            placement.noteAssigned(to: id)
            counts[id, default: 0] += 1
        }
        let limit = Int((1.25 * Double(Self.clientIDs.count) / 5).rounded(.up)) + 1
        #expect(counts.values.reduce(0, +) == Self.clientIDs.count)
        #expect(counts.values.allSatisfy { $0 <= limit }, "\(counts)")
        for (id, count) in counts { #expect(placement.connections(of: id) == count) }
    }

    @Test func boundIsTolerantOfFloatingPointNoise() {
        #expect(Placement.loadBound(total: 9, brokers: 1, factor: 1.1) == 11)
        #expect(Placement.loadBound(total: 7, brokers: 5, factor: 1.25) == 2)
        #expect(Placement.loadBound(total: 8, brokers: 5, factor: 1.25) == 3)
        #expect(Placement.loadBound(total: 0, brokers: 3, factor: 1.25) == 1)
    }

    @Test func reportedLoadsSteerNewClientsAway() throws {
        var placement = Placement(brokers: (1...3).map { F.broker("b\($0)") })
        placement.updateLoad(of: "b1", connections: 1000)
        placement.updateLoad(of: "b2", connections: 1000)
        // bound = ceil(1.25 * 2001 / 3) = 834: only b3 is under it.
        for client in Self.clientIDs.prefix(200) {
            #expect(try placement.assign(AssignmentRequest(clientID: client)).broker.id == "b3")
        }
        placement.updateLoad(of: "b1", connections: 0)
        #expect(placement.connections(of: "b1") == 0)
        placement.updateLoad(of: "nobody", connections: 5)  // ignored
        #expect(placement.connections(of: "nobody") == nil)
    }

    @Test func capacityIsNeverExceeded() throws {
        var placement = Placement(brokers: [F.broker("small", capacity: 3), F.broker("big", capacity: 100)])
        var counts: [String: Int] = [:]
        for client in Self.clientIDs.prefix(103) {
            let id = try placement.assign(AssignmentRequest(clientID: client)).broker.id
            placement.noteAssigned(to: id)
            counts[id, default: 0] += 1
        }
        #expect(counts["small"] == 3)
        #expect(counts["big"] == 100)
        F.expectError(.noBrokerAvailable) { () throws(TocsinError) in try placement.assign(AssignmentRequest(clientID: "one-too-many")) }
    }

    // MARK: - Regions

    /// eu (Paris, Frankfurt), us (New York), ap (Tokyo).
    func threeRegions(eu euState: BrokerState = .active, euConnections: Int = 0, euCapacity: Int = 1000) -> [BrokerRecord] {
        [
            F.broker("eu-1", region: "eu", connections: euConnections, capacity: euCapacity, state: euState, location: F.paris),
            F.broker("eu-2", region: "eu", connections: euConnections, capacity: euCapacity, state: euState, location: F.frankfurt),
            F.broker("us-1", region: "us", capacity: 1000, location: F.newYork),
            F.broker("ap-1", region: "ap", capacity: 5000, location: F.tokyo),
        ]
    }

    @Test func requestedRegionIsPreferred() throws {
        let placement = Placement(brokers: threeRegions())
        for client in Self.clientIDs.prefix(100) {
            // Even a client standing in Paris gets the region it asks for.
            let assignment = try placement.assign(AssignmentRequest(clientID: client, region: "us", location: F.paris))
            #expect(assignment.region == "us")
            #expect(assignment.broker.id == "us-1")
        }
        let eu = try placement.assign(AssignmentRequest(clientID: "c", region: "eu"))
        #expect(eu.region == "eu")
        #expect(eu.broker.region == "eu")
    }

    @Test func downRegionFailsOverToTheNearestByClientLocation() throws {
        let placement = Placement(brokers: threeRegions().filter { $0.region != "eu" })
        let fromParis = try placement.assign(AssignmentRequest(clientID: "c", region: "eu", location: F.paris))
        #expect(fromParis.region == "us")
        let fromSingapore = try placement.assign(AssignmentRequest(clientID: "c", region: "eu", location: F.singapore))
        #expect(fromSingapore.region == "ap")
        let noRegionFromTokyo = try placement.assign(AssignmentRequest(clientID: "c", location: F.tokyo))
        #expect(noRegionFromTokyo.region == "ap")
    }

    @Test func drainingRegionFailsOverToTheNearestByTheRegionsOwnLocation() throws {
        // No client location: eu's (draining) brokers tell where eu is; us is nearer to it than ap.
        let placement = Placement(brokers: threeRegions(eu: .draining))
        for client in Self.clientIDs.prefix(100) {
            let assignment = try placement.assign(AssignmentRequest(clientID: client, region: "eu"))
            #expect(assignment.region == "us")
            #expect(assignment.broker.state == .active)
        }
    }

    @Test func fullRegionFailsOverToTheNextNearest() throws {
        let placement = Placement(brokers: threeRegions(euConnections: 1000, euCapacity: 1000))
        let assignment = try placement.assign(AssignmentRequest(clientID: "c", region: "eu", location: F.dublin))
        #expect(assignment.region == "us")
        #expect(!assignment.alternates.contains { $0.region == "eu" })
    }

    @Test func withoutAnyLocationTheRegionWithMostSpareCapacityWins() throws {
        let brokers = threeRegions().filter { $0.region != "eu" }.map { record -> BrokerRecord in
            var record = record
            record.location = nil
            return record
        }
        let placement = Placement(brokers: brokers)
        #expect(try placement.assign(AssignmentRequest(clientID: "c", region: "eu")).region == "ap")  // 5000 > 1000 spare
        #expect(try placement.assign(AssignmentRequest(clientID: "c")).region == "ap")
        // Equal spare capacity: by name.
        let tie = Placement(brokers: [F.broker("x", region: "zz", capacity: 10), F.broker("y", region: "aa", capacity: 10)])
        #expect(try tie.assign(AssignmentRequest(clientID: "c")).region == "aa")
    }

    @Test func unlocatedRegionsComeAfterLocatedOnes() throws {
        let placement = Placement(brokers: [
            F.broker("far", region: "ap", capacity: 10, location: F.tokyo),
            F.broker("nowhere", region: "aa", capacity: 1_000_000),
        ])
        #expect(try placement.assign(AssignmentRequest(clientID: "c", location: F.paris)).region == "ap")
    }

    // MARK: - Exclusions, draining, nothing available

    @Test func excludeIsHonoured() throws {
        let placement = Placement(brokers: (1...4).map { F.broker("b\($0)") })
        for client in Self.clientIDs.prefix(300) {
            let first = try placement.assign(AssignmentRequest(clientID: client))
            let retry = try placement.assign(AssignmentRequest(clientID: client, exclude: [first.broker.id]))
            #expect(retry.broker.id != first.broker.id)
            #expect(!retry.alternates.contains { $0.id == first.broker.id })
        }
    }

    @Test func excludeIsIgnoredWhenItWouldLeaveNothing() throws {
        // A client that failed to reach every broker is sent back rather than refused.
        let placement = Placement(brokers: [F.broker("b1"), F.broker("b2"), F.broker("d", state: .draining)])
        let assignment = try placement.assign(AssignmentRequest(clientID: "c", exclude: ["b1", "b2"]))
        #expect(["b1", "b2"].contains(assignment.broker.id))
        let single = Placement(brokers: [F.broker("only")])
        #expect(try single.assign(AssignmentRequest(clientID: "c", exclude: ["only"])).broker.id == "only")
        // Excluding the only broker of the requested region sends the client to another region instead.
        let regions = Placement(brokers: [F.broker("eu-1", region: "eu"), F.broker("us-1", region: "us")])
        #expect(try regions.assign(AssignmentRequest(clientID: "c", region: "eu", exclude: ["eu-1"])).broker.id == "us-1")
    }

    @Test func drainingBrokersAreNeverAssigned() throws {
        let placement = Placement(brokers: [
            F.broker("b1"), F.broker("b2", state: .draining), F.broker("b3"), F.broker("b4", state: .draining),
        ])
        for client in Self.clientIDs.prefix(2000) {
            let assignment = try placement.assign(AssignmentRequest(clientID: client))
            #expect(assignment.broker.state == .active)
            #expect(assignment.alternates.allSatisfy { $0.state == .active })
        }
    }

    @Test func nothingAvailableIsAClearError() {
        F.expectError(.noBrokerAvailable) { () throws(TocsinError) in try Placement(brokers: []).assign(AssignmentRequest(clientID: "c")) }
        let draining = Placement(brokers: [F.broker("b1", state: .draining)])
        F.expectError(.noBrokerAvailable) { () throws(TocsinError) in try draining.assign(AssignmentRequest(clientID: "c")) }
        let full = Placement(brokers: [F.broker("b1", connections: 5, capacity: 5)])
        F.expectError(.noBrokerAvailable) { () throws(TocsinError) in try full.assign(AssignmentRequest(clientID: "c", exclude: ["b1"])) }
    }

    // MARK: - Alternates

    @Test func alternatesAreDistinctAndNeverThePrimary() throws {
        let placement = Placement(brokers: (1...5).map { F.broker("b\($0)") })
        for client in Self.clientIDs.prefix(500) {
            let assignment = try placement.assign(AssignmentRequest(clientID: client))
            let ids = assignment.alternates.map(\.id)
            #expect(ids.count == 2)
            #expect(Set(ids).count == ids.count)
            #expect(!ids.contains(assignment.broker.id))
        }
        var more = PlacementPolicy()
        more.alternates = 3
        #expect(
            try Placement(brokers: (1...5).map { F.broker("b\($0)") }, policy: more).assign(AssignmentRequest(clientID: "c")).alternates
                .count == 3)
    }

    @Test func alternatesComeFromOtherRegionsWhenTheRegionHasTooFew() throws {
        let placement = Placement(brokers: [
            F.broker("eu-1", region: "eu", location: F.paris),
            F.broker("us-1", region: "us", location: F.newYork),
            F.broker("ap-1", region: "ap", location: F.tokyo),
            F.broker("ap-2", region: "ap", location: F.tokyo),
        ])
        let assignment = try placement.assign(AssignmentRequest(clientID: "c", region: "eu", location: F.paris))
        #expect(assignment.broker.id == "eu-1")
        #expect(assignment.alternates.first?.id == "us-1")  // next nearest region
        #expect(assignment.alternates.count == 2)
        #expect(assignment.alternates.last?.region == "ap")
        // A lone broker has no alternates at all.
        #expect(try Placement(brokers: [F.broker("x")]).assign(AssignmentRequest(clientID: "c")).alternates.isEmpty)
    }

    @Test func tenBrokersAnswerCorrectly() throws {
        // The size the controller's benchmark measures; this only checks the answers.
        var placement = Placement(brokers: (0..<10).map { F.broker("broker-\($0)", capacity: 2000) })
        for client in Self.clientIDs {
            let assignment = try placement.assign(AssignmentRequest(clientID: client))
            #expect(assignment.broker.hasCapacity)
            #expect(assignment.alternates.count == 2)
            placement.noteAssigned(to: assignment.broker.id)
        }
        let total = (0..<10).compactMap { placement.connections(of: "broker-\($0)") }.reduce(0, +)
        #expect(total == Self.clientIDs.count)
    }
}
