import Testing
import TocsinCore
import TocsinDev
import TocsinStore
import TocsinTesting

/// The controllers' ledger on a real PostgreSQL: the lease row changes hands only when its lease
/// has run out on the database's clock, with a new epoch each time, and only the holder of the
/// current epoch can write the registry.
@Suite(.timeLimit(.minutes(2)))
struct PostgresLedgerTests {
    static func broker(_ id: String) -> BrokerSummary {
        BrokerSummary(
            id: id, incarnation: "\(id)-1", webSocketURL: "ws://\(id).example/v1/ws", httpURL: "http://\(id).example", region: "eu",
            location: GeoPoint(lat: 52, lon: 4), capacity: 100, state: .draining, load: BrokerLoad(connections: 7, cpu: 0.5))
    }

    @Test func theLeaseChangesHandsOnlyWhenItRunsOutAndEveryChangeIsANewEpoch() async throws {
        let server = try await PostgresServer.database()
        defer { server.destroy() }
        let location = try PostgresLocation(parsing: server.url + "?timeout=30")
        let a = try await PostgresLedger.open(location: location)
        let b = try await PostgresLedger.open(location: location)
        #expect(try await server.psql("SELECT version FROM tocsin_migrations ORDER BY version") == "1\n2\n3\n4\n5\n6\n")

        let first = try await a.claimLeadership(holder: "a", url: "http://a.example", lease: .seconds(30))
        #expect(first == LeadershipClaim(holder: "a", url: "http://a.example", epoch: 1, won: true))
        // While it runs, the other is told who holds it; the holder renews with the same epoch.
        #expect(try await b.claimLeadership(holder: "b", url: "http://b.example", lease: .seconds(30)) == LeadershipClaim(
            holder: "a", url: "http://a.example", epoch: 1, won: false))
        // The registry (while a's 30 s lease runs): written by the holder of the epoch, read by anyone.
        #expect(try await a.saveRegistry([Self.broker("b1"), Self.broker("b2")], holder: "a", epoch: 1))
        #expect(try await b.loadRegistry() == [Self.broker("b1"), Self.broker("b2")])
        #expect(try await !b.saveRegistry([], holder: "b", epoch: 1))

        // The operations document and the registry of controllers, the same way.
        #expect(try await a.saveControl(#"{"revision":1}"#, revision: 1, holder: "a", epoch: 1))
        #expect(try await !b.saveControl("{}", revision: 2, holder: "b", epoch: 1))
        #expect(try await b.loadControl(newerThan: 0)?.revision == 1)
        #expect(try await b.loadControl(newerThan: 1) == nil)
        let me = ComponentSummary(
            role: .controller, id: "a", incarnation: "a", urls: ["http": "http://a.example"], version: TocsinVersion.current, startedAtMillis: 1,
            refreshedAtMillis: 2, state: "leader", configVersion: 3)
        try await a.refreshController(me, lease: .seconds(30))
        #expect(try await b.controllers() == [me])

        // A claim answers within its lease or not at all (store_unavailable): on a loaded machine
        // a 300 ms one may miss, so renew until one answers (a renewal is idempotent).
        let short = try await waitForValue("a's 300 ms renewal to answer", timeout: .seconds(20)) { () async -> LeadershipClaim? in
            try? await a.claimLeadership(holder: "a", url: "http://a.example", lease: .milliseconds(300))
        }
        #expect(short.won)

        // Once a's 300 ms have run out on the database's clock, b takes it: epoch 2.
        let taken = try await waitForValue("b to take the lease", timeout: .seconds(10)) { () async -> LeadershipClaim? in
            guard let claim = try? await b.claimLeadership(holder: "b", url: "http://b.example", lease: .seconds(30)), claim.won else { return nil }
            return claim
        }
        #expect(taken == LeadershipClaim(holder: "b", url: "http://b.example", epoch: 2, won: true))
        // a is fenced off: it can neither renew nor write.
        #expect(try await !a.claimLeadership(holder: "a", url: "http://a.example", lease: .seconds(30)).won)
        #expect(try await !a.saveRegistry([], holder: "a", epoch: 1))
        #expect(try await b.saveRegistry([Self.broker("b3")], holder: "b", epoch: 2))
        #expect(try await a.loadRegistry().map(\.id) == ["b3"])
        await a.close()
        await b.close()
    }
}
