import Synchronization
import Testing
import TocsinClient
import TocsinController
import TocsinCore
import TocsinStore
import TocsinTesting

/// Two controllers in this process sharing a ledger that keeps the lease row in memory on the
/// test's manual clock (as PostgreSQL keeps it on its own): who takes the broker API, what
/// followers serve, and a takeover, step by step.
@Suite(.timeLimit(.minutes(1)))
struct LeadershipTests {
    /// `PostgresLedger`'s statements, on a `ManualClock` instead of the database's.
    final class MemoryLedger: ControllerLedger {
        struct Row {
            var holder: String?
            var url: String?
            var epoch: Int64 = 0
            var expiresAt: ClusterTime = .zero
            var registry: [BrokerSummary] = []
            var control: (document: String, revision: Int64) = ("{}", 0)
            var controllers: [String: (ComponentSummary, ClusterTime)] = [:]
        }

        let clock: ManualClock
        let row = Mutex(Row())

        init(clock: ManualClock) { self.clock = clock }

        func claimLeadership(holder: String, url: String, lease: Duration) async throws -> LeadershipClaim {
            let now = clock.now
            return row.withLock { r in
                guard r.holder == holder || r.expiresAt < now || r.holder == nil else {
                    return LeadershipClaim(holder: r.holder, url: r.url, epoch: r.epoch, won: false)
                }
                if r.holder != holder { r.epoch += 1 }
                r.holder = holder
                r.url = url
                r.expiresAt = now + lease
                return LeadershipClaim(holder: holder, url: url, epoch: r.epoch, won: true)
            }
        }

        func saveRegistry(_ brokers: [BrokerSummary], holder: String, epoch: Int64) async throws -> Bool {
            let now = clock.now
            return row.withLock { r in
                guard r.holder == holder, r.epoch == epoch, r.expiresAt > now else { return false }
                r.registry = brokers
                return true
            }
        }

        func loadRegistry() async throws -> [BrokerSummary] { row.withLock { $0.registry } }

        func saveControl(_ document: String, revision: Int64, holder: String, epoch: Int64) async throws -> Bool {
            let now = clock.now
            return row.withLock { r in
                guard r.holder == holder, r.epoch == epoch, r.expiresAt > now else { return false }
                r.control = (document, revision)
                return true
            }
        }

        func loadControl(newerThan revision: Int64) async throws -> (document: String, revision: Int64)? {
            row.withLock { $0.control.revision > revision ? $0.control : nil }
        }

        func refreshController(_ me: ComponentSummary, lease: Duration) async throws {
            let until = clock.now + lease
            row.withLock { $0.controllers[me.id] = (me, until) }
        }

        func controllers() async throws -> [ComponentSummary] {
            let now = clock.now
            return row.withLock { $0.controllers.values.filter { $0.1 > now }.map(\.0).sorted { $0.id < $1.id } }
        }

        func close() async {}
    }

    static func register(_ c: TestController) async throws -> HTTPCall.Reply {
        try await HTTPCall.send(.POST, c.url + "/v1/brokers", rawBody: ControllerAPITests.registration("b1", port: 9001, incarnation: "i1").serialized)
    }

    static func heartbeat(_ c: TestController) async throws -> HTTPCall.Reply {
        try await HTTPCall.send(.POST, c.url + "/v1/brokers/b1/heartbeat", rawBody: ControllerAPITests.heartbeat(incarnation: "i1", connections: 4).serialized)
    }

    @Test func theLeaderTakesTheBrokerAPIFollowersServeReadsAndAFollowerTakesOverWhenTheLeaseRunsOut() async throws {
        let clock = ManualClock()
        let ledger = MemoryLedger(clock: clock)
        try await TestController.with(clock: clock, ledger: ledger) { a in
            try await TestController.with(clock: clock, ledger: ledger) { b in
                // Neither leads before its first claim.
                ControllerAPITests.expectError(try await Self.register(a), status: 421, code: .notLeader)
                await a.controller.step()
                await b.controller.step()
                #expect(a.controller.isLeader)
                #expect(!b.controller.isLeader)

                let lease = try LeaseReply(json: try await Self.register(a).body)
                #expect(lease.epoch == 1)
                #expect(lease.cluster?.leader == a.url)
                let refused = try await Self.register(b)
                ControllerAPITests.expectError(refused, status: 421, code: .notLeader)
                #expect(refused.body["error"]?["leader"]?.stringValue == a.url)
                let message = refused.body["error"]?["message"]?.stringValue ?? ""
                #expect(message.contains(a.url))

                // The leader writes the registry at its tick; the follower reads it at its own.
                await a.controller.step()
                await b.controller.step()
                let followed = try await ControllerAPITests.cluster(b)
                #expect(followed.brokers.map(\.id) == ["b1"])
                #expect(followed.controller == b.url)
                #expect(followed.leader == a.url)
                #expect(followed.epoch == 1)
                let assigned = try AssignReply(json: try await HTTPCall.call(.GET, b.url + "/v1/assign?client=alice"))
                #expect(assigned.broker.id == "b1")

                // a stops claiming (paused, or cut off from the database). At its own deadline
                // (claim sent at 0 + 2 s lease − 500 ms margin) it stops taking broker calls...
                clock.advance(by: .milliseconds(1_499))
                #expect((try await Self.heartbeat(a)).status == 200)
                clock.advance(by: .milliseconds(1))
                ControllerAPITests.expectError(try await Self.heartbeat(a), status: 421, code: .notLeader)
                // ... before the lease has run out for anyone else.
                await b.controller.step()
                #expect(!b.controller.isLeader)
                clock.advance(by: .milliseconds(501))
                await b.controller.step()
                #expect(b.controller.isLeader)

                // The new leader knows b1 from the registry: its heartbeat is taken, with the new epoch.
                let beat = try LeaseReply(json: try await Self.heartbeat(b).body)
                #expect(beat.epoch == 2)
                #expect(beat.cluster?.leader == b.url)
                // a, claiming again, follows b.
                await a.controller.step()
                #expect(!a.controller.isLeader)
                let view = try await ControllerAPITests.cluster(a)
                #expect(view.leader == b.url)
                #expect(view.epoch == 2)
                let refusedByA = try await Self.heartbeat(a)
                #expect(refusedByA.body["error"]?["leader"]?.stringValue == b.url)
            }
        }
    }

    @Test func aControllerAloneAlwaysLeadsWithEpochZero() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            #expect(c.controller.isLeader)
            let lease = try LeaseReply(json: try await Self.register(c).body)
            #expect(lease.epoch == 0)
            let view = try await ControllerAPITests.cluster(c)
            #expect(view.leader == c.url)
            #expect(view.epoch == 0)
        }
    }
}
