import Foundation
import class PostgresNIO.PostgresConnection
import Synchronization
import Testing
import TocsinCore
import TocsinDev
@testable import TocsinStore
import TocsinTesting

/// What only the PostgreSQL store has: many processes on one database (here, several stores in
/// one process, each with its own connections, as brokers on other hosts would have), the
/// change feed across them, migrations racing, and outages of the database itself.
@Suite(.timeLimit(.minutes(2)))
struct PostgresStoreTests {
    static func open(_ server: PostgresDatabase, timeout: Double = 30) async throws -> PostgresStore {
        try await open(url: server.url, timeout: timeout)
    }

    static func open(url: String, timeout: Double = 30) async throws -> PostgresStore {
        var configuration = PostgresStore.Configuration(location: try PostgresLocation(parsing: url + "?timeout=\(timeout)"))
        configuration.pollInterval = .milliseconds(100)
        return try await PostgresStore.open(configuration)
    }

    /// Runs `hold` on a connection of `store` (as another broker would) and keeps it there,
    /// with whatever it locked, until the returned release is called; returns once `hold` ran.
    static func holding(
        _ what: String, in store: PostgresStore, _ hold: @escaping @Sendable (PostgresConnection) async throws -> Void
    ) async throws -> @Sendable () async throws -> Void {
        let (release, released) = AsyncStream<Void>.makeStream()
        let held = Atomic<Bool>(false)
        let holder = Task {
            try await store.transaction { db in
                try await hold(db)
                held.store(true, ordering: .relaxed)
                for await _ in release { break }
            }
        }
        try await TocsinTesting.waitUntil(what) { held.load(ordering: .relaxed) }
        return {
            released.yield()
            released.finish()
            try await holder.value
        }
    }

    /// Lends one connection of `store`'s pool to a LISTEN (no deadline) until the returned
    /// release is called; returns once it is lent.
    static func lend(_ store: PostgresStore) async throws -> @Sendable () async -> Void {
        let (release, released) = AsyncStream<Void>.makeStream()
        let lent = Atomic<Bool>(false)
        let holder = Task {
            try await store.connections.listen(channel: "held") { _ in
                lent.store(true, ordering: .relaxed)
                for await _ in release { break }
            }
        }
        try await TocsinTesting.waitUntil("a connection is lent") { lent.load(ordering: .relaxed) }
        return {
            released.finish()
            _ = try? await holder.value
        }
    }

    /// A database of its own on the process's shared server.
    static func withServer<T>(_ body: (PostgresDatabase) async throws -> T) async throws -> T {
        let server = try await PostgresServer.database()
        defer { server.destroy() }
        return try await body(server)
    }

    @Test func storesOpeningAFreshDatabaseAtOnceMigrateItOnce() async throws {
        try await Self.withServer { server in
            let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
                for _ in 0..<4 { group.addTask { try await Self.open(server) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(stores.count == 4)
            #expect(try await server.psql("SELECT version FROM tocsin_migrations ORDER BY version") == "1\n2\n3\n4\n5\n6\n")
            _ = try await stores[0].putStream(Fixtures.unbounded, recreate: false)
            #expect(try await stores[3].stream(named: "u") != nil)
        }
    }

    /// Brokers on many hosts append to one stream at once: every seq is used once, with no gap,
    /// and a reader that follows the stream never sees a seq before a lower one it has not seen.
    @Test func appendsFromManyStoresGetGaplessSeqsInCommitOrder() async throws {
        try await Self.withServer { server in
            let stores = [try await Self.open(server), try await Self.open(server), try await Self.open(server)]
            _ = try await stores[0].putStream(Fixtures.unbounded, recreate: false)
            // A reader polling the table as fast as it can, checking each read is a prefix.
            let stop = Atomic<Bool>(false)
            let reader = Task { () -> [Int64] in
                var seen: [Int64] = []
                while !stop.load(ordering: .relaxed) {
                    let events = try await stores[2].readEvents(stream: "u", after: seen.last ?? 0, limit: 1000)
                    seen += events.map(\.seq)
                }
                seen += try await stores[2].readEvents(stream: "u", after: seen.last ?? 0, limit: 100_000).map(\.seq)
                return seen
            }
            let seqs = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for i in 0..<24 {
                    let store = stores[i % 2]
                    group.addTask {
                        var seqs: [Int64] = []
                        for j in 0..<20 { seqs += try await store.append(stream: "u", events: [#"{"n":\#(i)}"#, #"{"n":\#(j)}"#]).seqs }
                        return seqs
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            stop.store(true, ordering: .relaxed)
            let seen = try await reader.value
            #expect(seqs.sorted() == Array(1...960))
            #expect(seen == Array(1...960), "the reader saw every seq once, in order, skipping none")
        }
    }

    /// A store learns of another's commits through LISTEN at once, and of definitions changing.
    @Test func anotherStoresCommitsWakeTheChangeFeed() async throws {
        try await Self.withServer { server in
            let writer = try await Self.open(server)
            let follower = try await Self.open(server)
            let services = follower.maintenanceServices()
            let running = Task { await withTaskGroup(of: Void.self) { group in for s in services { group.addTask { try? await s.run() } } } }
            defer { running.cancel() }
            let definitions = follower.changes.definitionChanges()
            _ = try await writer.putStream(Fixtures.unbounded, recreate: false)
            let told = await firstOrNil(within: .seconds(10)) { () -> Bool? in
                for await _ in definitions { return true }
                return nil
            }
            #expect(told == true, "told the definitions changed")
            let appended = try await writer.append(stream: "u", events: [#"{"n":1}"#, #"{"n":2}"#])
            let woke = await firstOrNil(within: .seconds(10)) { () -> Bool? in
                await follower.changes.wait(stream: "u", after: 0)
                return true
            }
            #expect(woke == true)
            #expect(follower.changes.lastSeq(of: "u") == 2)
            #expect(follower.changes.epoch(of: "u") == appended.epoch)
        }
    }

    /// While the database is down, every operation fails within the timeout with the retryable
    /// `store_unavailable` (nothing is acknowledged); once it is back, the same store works
    /// again and nothing acknowledged before is lost.
    @Test func anOutageFailsOperationsRetryablyAndTheStoreRecovers() async throws {
        // A server of its own: this test stops it.
        let server = try await PostgresServer.start()
        defer { server.destroy() }
        do {
            // A 2 s timeout; the setup is retried, since on a loaded machine (the whole suite
            // beside it) a first connection may take longer than that.
            let store = try await waitForValue("the store opens", timeout: .seconds(60)) { try? await Self.open(url: server.url, timeout: 2) }
            let before = try await waitForValue("the first append") { () -> Appended? in
                _ = try? await store.putStream(Fixtures.unbounded, recreate: false)
                return try? await store.append(stream: "u", events: [#"{"n":1}"#])
            }
            try await server.stop()
            let started = ContinuousClock.now
            let error = await #expect(throws: TocsinError.self) { _ = try await store.append(stream: "u", events: [#"{"n":2}"#]) }
            #expect(error?.code == .storeUnavailable, "\(String(describing: error))")
            #expect(ContinuousClock.now - started < .seconds(10), "failed by the timeout, not hanging on the dead server")
            let readError = await #expect(throws: TocsinError.self) { _ = try await store.readEvents(stream: "u", after: 0, limit: 10) }
            #expect(readError?.code == .storeUnavailable)
            #expect(readError?.message.contains("busy") == false, "a stopped database is not a busy pool: \(String(describing: readError))")
            try await server.restart()
            let after = try await waitForValue("the store answers again", timeout: .seconds(30)) {
                try? await store.append(stream: "u", events: [#"{"n":3}"#])
            }
            #expect(after.epoch == before.epoch)
            #expect(after.seqs == [2], "the refused append stored nothing")
            #expect(try await store.readEvents(stream: "u", after: 0, limit: 10).map(\.seq) == [1, 2])
        }
    }

    /// An operation that waits out the timeout because every connection of the pool is lent to
    /// others is told the store is busy (retryable, `store_unavailable`), not that the database
    /// cannot be reached; and it runs once a connection comes free. Meanwhile the store is ready
    /// (`/readyz`) at once, since the database answered within the timeout (when it did not, see
    /// `busyButAnsweringNeedsEveryConnectionLentAndARecentAnswer`).
    @Test func anOperationThatFindsThePoolBusyIsToldSo() async throws {
        try await Self.withServer { server in
            // A second host that never answers: a busy pool must not send the store looking for another.
            let url = "postgres://tocsin@127.0.0.1:\(server.server.port),127.0.0.1:1/\(server.name)?pool=2&timeout=5"
            var configuration = PostgresStore.Configuration(location: try PostgresLocation(parsing: url))
            configuration.pollInterval = .seconds(60)
            // Opening is retried: on a loaded machine (the whole suite beside it) a first
            // connection may take longer than the 5 s timeout.
            let opening = configuration
            let store = try await waitForValue("the store opens", timeout: .seconds(60)) { try? await PostgresStore.open(opening) }
            // Both connections of the pool, held (as the change feed's LISTEN holds one: no
            // deadline); the second after a read on it, so the database answered just now.
            let releaseFirst = try await Self.lend(store)
            _ = try await waitForValue("a read") { try? await store.subscriptions(client: "c") }
            let releaseSecond = try await Self.lend(store)
            let started = ContinuousClock.now
            try await store.checkReadable()
            #expect(ContinuousClock.now - started < .seconds(4), "ready at once (not after the 5 s timeout): busy, and the database answered just now")

            let error = await #expect(throws: TocsinError.self) { _ = try await store.subscriptions(client: "c") }
            #expect(error?.code == .storeUnavailable)
            #expect(error?.message.contains("the store is busy: all of this broker's 2 connections") == true, "\(String(describing: error))")
            #expect(store.connections.probes.load(ordering: .relaxed) == 0, "a busy pool started a search for another host")

            await releaseFirst()
            await releaseSecond()
            // Once free, reads go through again (retried only for a loaded machine's sake).
            #expect(try await waitForValue("a read once released") { try? await store.subscriptions(client: "c") }.isEmpty)
        }
    }

    @Test func busyButAnsweringNeedsEveryConnectionLentAndARecentAnswer() {
        let now = ContinuousClock.now
        #expect(PostgresConnections.busyButAnswering(inUse: 10, poolSize: 10, lastAnswer: now - .seconds(1), now: now, within: .seconds(5)))
        #expect(!PostgresConnections.busyButAnswering(inUse: 9, poolSize: 10, lastAnswer: now, now: now, within: .seconds(5)), "a free connection: just read")
        #expect(!PostgresConnections.busyButAnswering(inUse: 10, poolSize: 10, lastAnswer: now - .seconds(6), now: now, within: .seconds(5)), "no answer lately")
        #expect(!PostgresConnections.busyButAnswering(inUse: 10, poolSize: 10, lastAnswer: nil, now: now, within: .seconds(5)), "never answered")
    }

    /// A database that lost commits the store saw (restored from a backup, failed over to an
    /// asynchronous standby) is reported: the follower finds the stream behind what it saw.
    @Test func aStreamBehindWhatTheStoreSawIsReportedAsLostCommits() async throws {
        try await Self.withServer { server in
            let store = try await Self.open(server)
            let services = store.maintenanceServices()
            let running = Task { await withTaskGroup(of: Void.self) { group in for s in services { group.addTask { try? await s.run() } } } }
            defer { running.cancel() }
            _ = try await store.putStream(Fixtures.unbounded, recreate: false)
            _ = try await store.append(stream: "u", events: (1...5).map { #"{"n":\#($0)}"# })
            #expect(store.lostCommits.load(ordering: .relaxed) == 0)
            try await server.psql("DELETE FROM events WHERE seq > 2; UPDATE streams SET last_seq = 2")
            try await waitUntil("the lost commits reported", timeout: .seconds(10)) { store.lostCommits.load(ordering: .relaxed) > 0 }
        }
    }

    /// New subscriptions that wait for the one being created share its next transaction, as in
    /// SQLite (`SQLiteStoreTests.subscriptionsCreatedTogetherShareATransactionAndARefusedOneFailsAlone`),
    /// and a client's limit still holds across brokers. Here another store (another broker) holds
    /// client c's lock, so the first creation waits on it while five more queue behind it.
    @Test func subscriptionsCreatedTogetherShareATransactionAndARefusedOneFailsAlone() async throws {
        try await Self.withServer { server in
            let store = try await Self.open(server)
            let other = try await Self.open(server)
            let (info, _) = try await store.putStream(Fixtures.unbounded, recreate: false)
            let start = StreamPosition(epoch: info.epoch, seq: 0)
            let release = try await Self.holding("the other broker holds c's lock", in: other) { db in
                try await db.query("SELECT pg_advisory_xact_lock(hashtextextended('subscriber:c', 0))", logger: other.logger)
            }
            try await BatchedCreations.check(
                store, start: start, handling: { store.creations.handling }, queued: { store.creations.queued },
                batches: { store.creations.batches.load(ordering: .relaxed) }, readBack: other, release: release)
        }
    }

    /// One request the database refuses (a client id PostgreSQL cannot store: a NUL character)
    /// fails alone; the others in its batch are stored.
    @Test func aRequestTheDatabaseRefusesFailsAloneNotItsBatch() async throws {
        try await Self.withServer { server in
            let store = try await Self.open(server)
            let (info, _) = try await store.putStream(Fixtures.unbounded, recreate: false)
            let start = StreamPosition(epoch: info.epoch, seq: 0)
            let requests = ["a", "b\u{0}c", "d"].map { client in
                SubscriptionCreations.Request(
                    client: client, channel: "ch", params: [:], paramsText: "{}", initial: start, maxPerClient: 5, newID: PostgresStore.newSubscriptionID())
            }
            let results = await PostgresStore.openSubscriptions(requests, connections: store.connections, nowMillis: { 0 }, logger: store.logger)
            #expect(results.count == 3)
            #expect((try? results[0].get())?.1 == true)
            #expect((try? results[1].get()) == nil)
            #expect((try? results[2].get())?.1 == true)
            #expect(try await store.subscriptions(client: "a").count == 1)
            #expect(try await store.subscriptions(client: "d").count == 1)
        }
    }

    /// A publish the database refuses for what it carries (a key PostgreSQL cannot store: a NUL
    /// character) fails alone; the publishes committed beside it are stored and answered.
    @Test func anAppendTheDatabaseRefusesFailsAloneNotThePublishesBesideIt() async throws {
        try await Self.withServer { server in
            let store = try await Self.open(server)
            let other = try await Self.open(server)
            _ = try await store.putStream(Fixtures.unbounded, recreate: false)
            _ = try await store.append(stream: "u", events: [#"{"n":0}"#])
            // Another broker holds the stream's row: the next commit waits, and the three
            // appends after it queue for the one after (one transaction, until it fails).
            let release = try await Self.holding("the other broker holds the stream", in: other) { db in
                try await db.query("SELECT 1 FROM streams WHERE name = 'u' FOR UPDATE", logger: other.logger)
            }
            let first = Task { try await store.append(stream: "u", events: [#"{"n":1}"#]) }
            try await TocsinTesting.waitUntil("the first append waits") { store.committer.committing == 1 }
            let rest = [("k1", 2), ("bad\u{0}key", 3), ("k3", 4)].map { key, n in
                Task { try await store.append(stream: "u", events: [#"{"n":\#(n)}"#], key: key, trace: nil) }
            }
            try await TocsinTesting.waitUntil("three appends queue behind it") { store.committer.queued == 3 }
            try await release()

            #expect(try await first.value.seqs == [2])
            var outcomes: [Result<[Int64], any Error>] = []
            for task in rest { outcomes.append(await task.result.map(\.seqs)) }
            #expect((try? outcomes[0].get()) == [3])
            #expect((try? outcomes[1].get()) == nil, "a key with a NUL is refused")
            #expect((try? outcomes[2].get()) == [4])
            #expect(try await store.readEvents(stream: "u", after: 0, limit: 10).map(\.seq) == [1, 2, 3, 4])
        }
    }

    /// Two brokers creating many subscriptions at once for the same clients, some of them the
    /// same subscription: each client ends with exactly its limit, every subscription a caller
    /// was given is stored under its key, and callers asking for the same one got the same one.
    @Test func manyBrokersCreatingAtOnceKeepEachClientsLimit() async throws {
        try await Self.withServer { server in
            let stores = [try await Self.open(server), try await Self.open(server)]
            let (info, _) = try await stores[0].putStream(Fixtures.unbounded, recreate: false)
            let start = StreamPosition(epoch: info.epoch, seq: 0)
            // 20 clients, each asking for 6 different subscriptions twice (once on each broker), limit 4.
            let asks = (0..<20).flatMap { c in (0..<6).flatMap { n in (0..<2).map { broker in (client: "c\(c)", n: n, broker: broker) } } }.shuffled()
            let outcomes = await withTaskGroup(of: (String, Int, Result<SubscriptionRecord, TocsinError>).self) { group in
                for ask in asks {
                    group.addTask {
                        do {
                            let (record, _) = try await stores[ask.broker].openSubscription(
                                client: ask.client, channel: "ch", params: ["n": .int(Int64(ask.n))], initial: start, maxPerClient: 4)
                            return (ask.client, ask.n, .success(record))
                        } catch {
                            return (ask.client, ask.n, .failure(error as? TocsinError ?? TocsinError(.internalError, "\(error)")))
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            var given: [String: String] = [:]
            for (client, n, outcome) in outcomes {
                switch outcome {
                case .success(let record):
                    let key = "\(client)/\(n)"
                    #expect(given[key] == nil || given[key] == record.id, "two subscriptions for \(key)")
                    given[key] = record.id
                case .failure(let error):
                    #expect(error.code == .tooManySubscriptions, "\(error)")
                }
            }
            for c in 0..<20 {
                let stored = try await stores[1].subscriptions(client: "c\(c)")
                #expect(stored.count == 4, "client c\(c) holds \(stored.count)")
                for record in stored {
                    let n = (0..<6).first { record.params == ["n": .int(Int64($0))] }.map(String.init) ?? "?"
                    #expect(given["c\(c)/\(n)"] == record.id, "c\(c)'s \(n) stored as \(record.id), given \(given["c\(c)/\(n)"] ?? "to nobody")")
                }
                #expect(given.keys.filter { $0.hasPrefix("c\(c)/") }.count == 4)
            }
            let batches = stores.map { $0.creations.batches.load(ordering: .relaxed) }.reduce(0, +)
            #expect(batches < asks.count / 2, "\(batches) transactions for \(asks.count) subscribes")
        }
    }

    @Test func connectionStringsParseAsLibpqTakesThem() throws {
        let url = try PostgresLocation(parsing: "postgres://alice:s%40cret@db.example:6543/alerts?pool=20&timeout=2.5&sslmode=require")
        #expect(url.hosts == [.init(name: "db.example", port: 6543)])
        #expect(url.user == "alice")
        #expect(url.password == "s@cret")
        #expect(url.database == "alerts")
        #expect(url.poolSize == 20)
        #expect(url.operationTimeout == .milliseconds(2500))
        #expect(url.requireTLS)
        #expect(!url.description.contains("s@cret"), "the description leaves the password out")
        let multi = try PostgresLocation(parsing: "host=a,b port=5432,5433 dbname=tocsin user=t target_session_attrs=read-write")
        #expect(multi.hosts == [.init(name: "a", port: 5432), .init(name: "b", port: 5433)])
        #expect(multi.readWriteOnly)
        let urlMulti = try PostgresLocation(parsing: "postgresql://t@a:1,b:2/db")
        #expect(urlMulti.hosts == [.init(name: "a", port: 1), .init(name: "b", port: 2)])
        for bad in ["postgres://h/db", "host=a port=99999 user=t", "host=a,b,c port=1,2 user=t", "postgres://t@h/db?pool=0", "postgres://t@h/db?sslmode=maybe"] {
            #expect(throws: TocsinError.self, "\(bad)") { try PostgresLocation(parsing: bad) }
        }
    }
}
