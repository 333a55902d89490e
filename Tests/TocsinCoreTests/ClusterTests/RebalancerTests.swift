import Testing

@testable import TocsinCore

@Suite struct RebalancerTests {
    typealias F = ClusterFixture

    /// The brokers after carrying out `plan`.
    static func apply(_ plan: RebalancePlan, to brokers: [BrokerRecord]) -> [BrokerRecord] {
        var delta: [String: Int] = [:]
        for move in plan.moves {
            delta[move.from, default: 0] -= move.count
            delta[move.to, default: 0] += move.count
        }
        return brokers.map { record in
            var record = record
            record.load.connections += delta[record.id] ?? 0
            return record
        }
    }

    /// max(Σ excess above the band, Σ deficit below it) over one region's brokers, counting every
    /// client of a draining broker as excess: no plan can move fewer clients.
    static func minimumMoves(_ region: [BrokerRecord], policy: RebalancePolicy = .init()) -> Int {
        let active = region.filter { $0.state == .active }
        guard !active.isEmpty else { return 0 }
        let total = region.reduce(0) { $0 + $1.load.connections }
        let band = Rebalancer.band(total: total, activeBrokers: active.count, policy: policy)
        let drained = region.filter { $0.state == .draining }.reduce(0) { $0 + $1.load.connections }
        let excess = drained + active.reduce(0) { $0 + max(0, $1.load.connections - band.upperBound) }
        let deficit = active.reduce(0) { $0 + max(0, band.lowerBound - $1.load.connections) }
        return max(excess, deficit)
    }

    // MARK: - Examples

    @Test func balancedClusterNeedsNoMoves() {
        let brokers = [F.broker("a", connections: 100), F.broker("b", connections: 95), F.broker("c", connections: 108)]
        #expect(Rebalancer.isBalanced(brokers: brokers))
        #expect(Rebalancer.plan(brokers: brokers).isEmpty)
        #expect(Rebalancer.plan(brokers: []).isEmpty)
        #expect(Rebalancer.isBalanced(brokers: []))
    }

    @Test func newBrokerTakesTheMinimumNumberOfClients() {
        let brokers = [F.broker("a", connections: 1000), F.broker("b", connections: 1000), F.broker("new", connections: 0)]
        // m = 2000/3 = 666.7, t = 66.7: band [600, 733]. Excess 2 × 267 = 534, deficit 600: at least 600 moves.
        #expect(Rebalancer.band(total: 2000, activeBrokers: 3, policy: .init()) == 600...733)
        #expect(Self.minimumMoves(brokers) == 600)
        let plan = Rebalancer.plan(brokers: brokers)
        #expect(plan.totalClients == 600)
        #expect(plan.moves.allSatisfy { $0.to == "new" })
        let after = Self.apply(plan, to: brokers)
        #expect(after.allSatisfy { (600...733).contains($0.load.connections) }, "\(after.map(\.load.connections))")
        #expect(after.map(\.load.connections) == [700, 700, 600])  // donors levelled
        #expect(Rebalancer.isBalanced(brokers: after))
        #expect(Rebalancer.plan(brokers: after).isEmpty)
    }

    @Test func smallClustersDoNotPingPong() {
        // m = 4.5, t = max(0.45, 5) = 5: band [0, 9]; 3 and 6 are both fine.
        let brokers = [F.broker("a", connections: 3), F.broker("b", connections: 6)]
        #expect(Rebalancer.isBalanced(brokers: brokers))
        #expect(Rebalancer.plan(brokers: brokers).isEmpty)
    }

    @Test func bandIsNeverEmpty() {
        let exact = RebalancePolicy(relativeTolerance: 0, absoluteTolerance: 0)
        #expect(Rebalancer.band(total: 10, activeBrokers: 4, policy: exact) == 2...3)
        #expect(Rebalancer.band(total: 12, activeBrokers: 4, policy: exact) == 3...3)
        #expect(Rebalancer.band(total: 0, activeBrokers: 4, policy: exact) == 0...0)
        #expect(Rebalancer.band(total: 1000, activeBrokers: 10, policy: .init()) == 90...110)
        let brokers = [F.broker("a", connections: 7), F.broker("b", connections: 0), F.broker("c", connections: 3)]
        let plan = Rebalancer.plan(brokers: brokers, policy: exact)
        let after = Self.apply(plan, to: brokers).map(\.load.connections)
        #expect(after.allSatisfy { (3...4).contains($0) }, "\(after)")
        #expect(plan.totalClients == 3)
    }

    @Test func regionsAreRespected() {
        // A busy region never sends clients to an idle one; each region is balanced on its own.
        let brokers = [
            F.broker("eu-1", region: "eu", connections: 900),
            F.broker("eu-2", region: "eu", connections: 100),
            F.broker("us-1", region: "us", connections: 0),
            F.broker("us-2", region: "us", connections: 0),
        ]
        let plan = Rebalancer.plan(brokers: brokers)
        #expect(plan.moves == [Move(from: "eu-1", to: "eu-2", count: 350)])  // band [450, 550]
        let busyOnly = [
            F.broker("eu-1", region: "eu", connections: 500), F.broker("eu-2", region: "eu", connections: 500),
            F.broker("us-1", region: "us", connections: 0),
        ]
        #expect(Rebalancer.plan(brokers: busyOnly).isEmpty)
        #expect(Rebalancer.isBalanced(brokers: busyOnly))
    }

    @Test func drainingBrokerIsEmptiedIntoItsRegion() {
        let brokers = [
            F.broker("a", region: "eu", connections: 100),
            F.broker("b", region: "eu", connections: 50),
            F.broker("d", region: "eu", connections: 90, state: .draining),
            F.broker("us-1", region: "us", connections: 0),
        ]
        #expect(!Rebalancer.isBalanced(brokers: brokers))
        let plan = Rebalancer.plan(brokers: brokers)
        #expect(plan.moves.allSatisfy { $0.from == "d" && ["a", "b"].contains($0.to) })
        #expect(plan.totalClients == 90)
        let after = Self.apply(plan, to: brokers)
        #expect(after.map(\.load.connections) == [120, 120, 0, 0])
        #expect(Rebalancer.isBalanced(brokers: after))
        #expect(Rebalancer.plan(brokers: after).isEmpty)
    }

    @Test func drainingBeyondTheBandFillsUpToCapacityButNeverOver() {
        let brokers = [
            F.broker("a", connections: 10, capacity: 30),
            F.broker("b", connections: 10, capacity: 50),
            F.broker("d", connections: 100, state: .draining),
        ]
        let plan = Rebalancer.plan(brokers: brokers)
        let after = Self.apply(plan, to: brokers)
        #expect(after.map(\.load.connections) == [30, 50, 40])  // all that fits; d keeps the rest
        #expect(Rebalancer.plan(brokers: after).isEmpty)
        #expect(!Rebalancer.isBalanced(brokers: after))
    }

    @Test func drainingRegionWithNoActiveBrokerGoesToTheNearestRegion() {
        let brokers = [
            F.broker("ap-d", region: "ap", connections: 40, state: .draining, location: F.tokyo),
            F.broker("eu-1", region: "eu", connections: 10, location: F.paris),
            F.broker("sg-1", region: "sg", connections: 10, location: F.singapore),
            F.broker("sg-2", region: "sg", connections: 10, location: F.singapore),
        ]
        let plan = Rebalancer.plan(brokers: brokers)
        #expect(plan.totalClients == 40)
        #expect(plan.moves.allSatisfy { $0.from == "ap-d" && $0.to.hasPrefix("sg-") })
        #expect(Self.apply(plan, to: brokers).map(\.load.connections) == [0, 10, 30, 30])
    }

    @Test func drainingRegionOverflowsToTheNextNearestRegion() {
        let brokers = [
            F.broker("ap-d", region: "ap", connections: 100, state: .draining, location: F.tokyo),
            F.broker("sg-1", region: "sg", connections: 10, capacity: 40, location: F.singapore),
            F.broker("eu-1", region: "eu", connections: 0, location: F.paris),
            F.broker("us-1", region: "us", connections: 0, location: F.newYork),
        ]
        let plan = Rebalancer.plan(brokers: brokers)
        // Singapore (nearest) takes the 30 it has room for; Paris is nearer to Tokyo than New York.
        #expect(plan.moves == [Move(from: "ap-d", to: "eu-1", count: 70), Move(from: "ap-d", to: "sg-1", count: 30)])
        #expect(Rebalancer.plan(brokers: Self.apply(plan, to: brokers)).isEmpty)
    }

    @Test func brokersAboveTheBandNeverTakeDrainingClients() {
        // Band for 200 clients over 2 active brokers: [90, 110]. "hot" is above it; even though it has
        // room below its capacity it must not receive, or the next plan would move those clients again.
        let brokers = [
            F.broker("hot", connections: 150, capacity: 1000),
            F.broker("cool", connections: 0, capacity: 20),
            F.broker("d", connections: 50, state: .draining),
        ]
        let plan = Rebalancer.plan(brokers: brokers)
        #expect(!plan.moves.contains { $0.to == "hot" })
        #expect(plan.moves.contains(Move(from: "d", to: "cool", count: 20)))
        #expect(Rebalancer.plan(brokers: Self.apply(plan, to: brokers)).isEmpty)
    }

    @Test func capacityLimitsWhatMoves() {
        let brokers = [F.broker("a", connections: 1000, capacity: 2000), F.broker("b", connections: 0, capacity: 100)]
        let plan = Rebalancer.plan(brokers: brokers)
        #expect(plan.moves == [Move(from: "a", to: "b", count: 100)])
        let after = Self.apply(plan, to: brokers)
        #expect(Rebalancer.plan(brokers: after).isEmpty)
    }

    @Test func plansAreDeterministicAndMerged() {
        var rng = SplitMix(seed: 99)
        let brokers = (0..<12).map {
            F.broker(
                "b\($0)", region: ["eu", "us"][$0 % 2], connections: Int.random(in: 0...500, using: &rng),
                state: $0 % 5 == 4 ? .draining : .active)
        }
        let plan = Rebalancer.plan(brokers: brokers)
        #expect(!plan.isEmpty)
        for _ in 0..<10 { #expect(Rebalancer.plan(brokers: brokers.shuffled(using: &rng)) == plan) }
        let pairs = plan.moves.map { "\($0.from)->\($0.to)" }
        #expect(Set(pairs).count == pairs.count)
    }

    @Test func levelOffCutsTheLargestFirst() {
        #expect(Rebalancer.levelOff([10, 4, 7], taking: 5) == [4, 0, 1])  // leaves 6, 4, 6
        #expect(Rebalancer.levelOff([10, 4, 7], taking: 6) == [5, 0, 1])  // leaves 5, 4, 6: the spare unit by index
        #expect(Rebalancer.levelOff([3, 3, 3], taking: 4) == [2, 1, 1])
        #expect(Rebalancer.levelOff([3, 3], taking: 100) == [3, 3])
        #expect(Rebalancer.levelOff([3, 3], taking: 0) == [0, 0])
        #expect(Rebalancer.levelOff([], taking: 5) == [])
    }

    // MARK: - Properties over random clusters

    static func randomCluster(_ rng: inout SplitMix, roomyCapacities: Bool) -> [BrokerRecord] {
        let places = [F.paris, F.newYork, F.tokyo, F.singapore, F.dublin]
        var brokers: [BrokerRecord] = []
        let scale = [10, 100, 2000].randomElement(using: &rng) ?? 100
        for region in 0..<Int.random(in: 1...3, using: &rng) {
            let location: GeoPoint? = Bool.random(using: &rng) ? places[region] : nil
            for index in 0..<Int.random(in: 1...6, using: &rng) {
                let load = Int.random(in: 0...scale, using: &rng)
                let capacity = roomyCapacities ? 1_000_000 : Int.random(in: max(1, load / 2)...(scale * 2), using: &rng)
                let state: BrokerState = Int.random(in: 0..<5, using: &rng) == 0 ? .draining : .active
                brokers.append(
                    F.broker(
                        "r\(region)-b\(index)", region: "r\(region)", connections: load,
                        capacity: capacity, state: state, location: location))
            }
        }
        return brokers.shuffled(using: &rng)
    }

    static func checkInvariants(_ brokers: [BrokerRecord], sourceLocation: SourceLocation = #_sourceLocation) {
        let plan = Rebalancer.plan(brokers: brokers)
        let byID = Dictionary(uniqueKeysWithValues: brokers.map { ($0.id, $0) })
        let senders = Set(plan.moves.map(\.from))
        let receivers = Set(plan.moves.map(\.to))
        #expect(senders.isDisjoint(with: receivers), "a broker both sends and receives", sourceLocation: sourceLocation)
        #expect(Set(plan.moves.map { "\($0.from)->\($0.to)" }).count == plan.moves.count, sourceLocation: sourceLocation)
        var given: [String: Int] = [:]
        for move in plan.moves {
            #expect(move.count > 0 && move.from != move.to, sourceLocation: sourceLocation)
            given[move.from, default: 0] += move.count
            guard let from = byID[move.from], let to = byID[move.to] else {
                Issue.record("unknown broker in \(move)", sourceLocation: sourceLocation)
                continue
            }
            #expect(to.state == .active, "a draining broker receives", sourceLocation: sourceLocation)
            let fromRegionHasActive = brokers.contains { $0.region == from.region && $0.state == .active }
            #expect(from.region == to.region || !fromRegionHasActive, "\(move) crosses regions", sourceLocation: sourceLocation)
        }
        for (id, count) in given {
            #expect(count <= byID[id]?.load.connections ?? 0, "\(id) gives more than it holds", sourceLocation: sourceLocation)
        }
        let after = apply(plan, to: brokers)
        for record in after where receivers.contains(record.id) {
            #expect(record.load.connections <= record.capacity, "\(record.id) overfilled", sourceLocation: sourceLocation)
        }
        #expect(after.map(\.load.connections).reduce(0, +) == brokers.map(\.load.connections).reduce(0, +))
        let replan = Rebalancer.plan(brokers: after)
        #expect(replan.isEmpty, "ping-pong: \(replan.moves) after \(plan.moves)", sourceLocation: sourceLocation)
    }

    @Test func randomClustersKeepEveryInvariant() {
        var rng = SplitMix(seed: 2024)
        for _ in 0..<3000 {
            Self.checkInvariants(Self.randomCluster(&rng, roomyCapacities: Bool.random(using: &rng)))
        }
    }

    @Test func withRoomyCapacitiesPlansMoveExactlyTheMinimumAndBalance() {
        var rng = SplitMix(seed: 77)
        for _ in 0..<2000 {
            let brokers = Self.randomCluster(&rng, roomyCapacities: true)
            let regions = Dictionary(grouping: brokers, by: \.region)
            // Orphaned draining brokers cross regions; the per-region minimum does not describe them.
            guard regions.values.allSatisfy({ $0.contains { $0.state == .active } }) else { continue }
            let plan = Rebalancer.plan(brokers: brokers)
            let minimum = regions.values.reduce(0) { $0 + Self.minimumMoves($1) }
            #expect(plan.totalClients == minimum)
            #expect(Rebalancer.isBalanced(brokers: Self.apply(plan, to: brokers)))
        }
    }

    /// The true minimum by exhaustive search over every final distribution within the band.
    static func bruteForceMinimum(_ brokers: [BrokerRecord]) -> Int {
        let active = brokers.filter { $0.state == .active }
        let total = brokers.reduce(0) { $0 + $1.load.connections }
        let band = Rebalancer.band(total: total, activeBrokers: active.count, policy: .init())
        var best = Int.max
        func search(_ index: Int, _ left: Int, _ arrivals: Int) {
            if index == active.count {
                if left == 0 { best = min(best, arrivals) }
                return
            }
            for final in band where final <= left {
                search(index + 1, left - final, arrivals + max(0, final - active[index].load.connections))
            }
        }
        search(0, total, 0)
        return best
    }

    @Test func minimumMatchesExhaustiveSearchOnSmallClusters() {
        var rng = SplitMix(seed: 5)
        var checked = 0
        while checked < 300 {
            let count = Int.random(in: 1...4, using: &rng)
            let brokers = (0..<count).map {
                F.broker(
                    "b\($0)", connections: Int.random(in: 0...40, using: &rng),
                    state: $0 > 0 && Int.random(in: 0..<4, using: &rng) == 0 ? .draining : .active)
            }
            guard brokers.contains(where: { $0.state == .active }) else { continue }
            checked += 1
            let brute = Self.bruteForceMinimum(brokers)
            #expect(Self.minimumMoves(brokers) == brute)
            #expect(Rebalancer.plan(brokers: brokers).totalClients == brute, "\(brokers.map { ($0.load.connections, $0.state) })")
        }
    }
}
