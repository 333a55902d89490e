import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinLoad
import TocsinStore
import TocsinTesting

extension MultiProcess {
/// Real `tocsin serve` processes on a real PostgreSQL that goes away under load: stopped and
/// restarted, or a primary SIGKILLed and its synchronous standby promoted. Publishes during the
/// outage are refused with the retryable `store_unavailable` (503, Retry-After), never
/// acknowledged; WebSocket subscribers stay connected; afterwards every subscriber has every
/// event of the stream exactly once, in seq order, with no gap.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct DatabaseOutageTests {
    static let logger: Logger = {
        var logger = Logger(label: "outage-test")
        logger.logLevel = .critical
        return logger
    }()

    /// Publishes one event at a time at a steady rate, each with a key of its own, over HTTP or,
    /// every other one, on a WebSocket connection kept open throughout; records what each
    /// publish came to and when.
    final class KeyedFeed: Sendable {
        struct Outcome: Sendable {
            var key: Int
            var started: ContinuousClock.Instant
            var ended: ContinuousClock.Instant
            var webSocket: Bool
            /// The HTTP status; 0 on the WebSocket or when no answer came.
            var status: Int
            var code: String?
            var retryAfter: String?
            var seq: Int64?
        }

        let kind: String
        let urls: [String]
        let outcomes = Mutex<[Outcome]>([])
        /// key -> the seq its publish was acknowledged with.
        let acknowledged = Mutex<[Int: Int64]>([:])
        let refused = Atomic<Int>(0)
        /// The WebSocket connection publishes went on ended before `stop()`, with this error.
        let webSocketLost = Mutex<String?>(nil)
        private let stopped = Atomic<Bool>(false)

        /// Publishes to `urls` (broker HTTP URLs) in turn.
        init(urls: [String], kind: String) {
            self.urls = urls
            self.kind = kind
        }

        var count: Int { acknowledged.withLock { $0.count } }

        func stop() { stopped.store(true, ordering: .relaxed) }

        /// Publishes new keys every `1/rate` s until `stop()`: odd keys over HTTP, even ones on a
        /// WebSocket connection to the first broker.
        func run(rate: Int) async {
            do {
                let url = BaseURL.webSocketURL(forHTTP: urls[0])
                try await Connection.run(url: url, logger: DatabaseOutageTests.logger) { connection in
                    let start = ContinuousClock.now
                    var n = 0
                    while !self.stopped.load(ordering: .relaxed), !Task.isCancelled {
                        let due = start + .seconds(Double(n) / Double(rate))
                        if due > ContinuousClock.now { try? await Task.sleep(until: due) }
                        n += 1
                        await self.publish(key: n, on: n % 2 == 0 ? connection : nil)
                    }
                }
            } catch {
                webSocketLost.withLock { $0 = "\(error)" }
            }
        }

        /// Publishes event `key` once, on `connection` or else over HTTP; returns whether it
        /// was acknowledged.
        @discardableResult
        func publish(key: Int, on connection: Connection? = nil) async -> Bool {
            let url = urls[key % urls.count] + "/v1/streams/emergencies/events"
            let event = Feed.event(kind: kind, sent: Monotonic.nanos())
            let started = ContinuousClock.now
            var outcome = Outcome(key: key, started: started, ended: started, webSocket: connection != nil, status: 0)
            if let connection {
                do {
                    outcome.seq = try await connection.publish(stream: "emergencies", events: [event], key: "k\(key)").first
                } catch let error as TocsinError {
                    outcome.code = error.code.rawValue
                } catch {
                    outcome.code = "no answer: \(error)"
                }
            } else {
                do {
                    let reply = try await HTTPCall.send(
                        .POST, url, rawBody: event.serialized, headers: [("Idempotency-Key", "k\(key)")], timeout: .seconds(10))
                    outcome.status = reply.status
                    outcome.code = reply.body["error"]?["code"]?.stringValue
                    outcome.retryAfter = reply.headers["retry-after"]
                    outcome.seq = (200..<300).contains(reply.status) ? reply.body["seq"]?.intValue : nil
                } catch {
                    outcome.code = "no answer: \(error)"
                }
            }
            outcome.ended = ContinuousClock.now
            let final = outcome
            outcomes.withLock { $0.append(final) }
            if let seq = final.seq {
                acknowledged.withLock { $0[key] = seq }
                return true
            }
            refused.add(1, ordering: .relaxed)
            return false
        }

        /// Publishes every key that was not acknowledged again, with its key, until each is.
        func publishRefusedAgain(upTo last: Int) async throws {
            for key in 1...last where acknowledged.withLock({ $0[key] == nil }) {
                try await waitUntil("key \(key) acknowledged on a retry", timeout: .seconds(20)) { await self.publish(key: key) }
            }
        }

        /// Publishes that succeeded though they were sent and answered entirely within `window`.
        func acknowledged(within window: Range<ContinuousClock.Instant>) -> [Outcome] {
            outcomes.withLock { $0.filter { window.contains($0.started) && $0.ended < window.upperBound && $0.seq != nil } }
        }

        /// Publishes refused other than with `store_unavailable` (over HTTP: 503 and `Retry-After: 1`).
        var refusedOtherwise: [Outcome] {
            outcomes.withLock {
                $0.filter { o in
                    o.seq == nil && !(o.code == "store_unavailable" && (o.webSocket || (o.status == 503 && o.retryAfter == "1")))
                }
            }
        }

        /// Refusals on the WebSocket connection.
        var refusedOnTheWebSocket: Int { outcomes.withLock { $0.count { $0.webSocket && $0.seq == nil } } }

        var highestKey: Int { outcomes.withLock { $0.map(\.key).max() ?? 0 } }
    }

    static func audience(count: Int, seed: String, kind: String, prefix: String) -> Audience {
        var configuration = Audience.Configuration(count: count, seeds: [seed], kind: kind)
        configuration.initialBackoff = .milliseconds(200)
        configuration.ackInterval = .milliseconds(100)
        configuration.clientPrefix = prefix
        return Audience(configuration: configuration, logger: logger)
    }

    static func serve(store url: String) async throws -> ServerProcess {
        try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "0", "--store", url])
    }

    /// `GET /readyz`: the status and the error code.
    static func readiness(_ base: String) async -> (Int, String?) {
        guard let reply = try? await HTTPCall.send(.GET, base + "/readyz", timeout: .seconds(5)) else { return (0, nil) }
        return (reply.status, reply.body["error"]?["code"]?.stringValue)
    }

    /// After an outage and once every refused publish was sent again: nothing was acknowledged
    /// during `outage`; every refusal was `store_unavailable`; no WebSocket closed (but those of
    /// the `reconnected` audiences, whose broker was killed, once each); `database` holds each
    /// key's event once, as seqs 1...N; every subscriber has exactly those, in order; and every
    /// subscription's acknowledged position reached the store.
    static func expectNothingLost(
        feed: KeyedFeed, outage: Range<ContinuousClock.Instant>, audiences: [Audience], reconnected: [Audience] = [],
        database: PostgresServer
    ) async throws {
        #expect(feed.acknowledged(within: outage).isEmpty, "nothing was acknowledged while the database was out of reach")
        let odd = feed.refusedOtherwise
        #expect(odd.isEmpty, "every refusal was store_unavailable (503 with Retry-After: 1 over HTTP): \(odd.prefix(5))")
        #expect(feed.refusedOnTheWebSocket > 0, "publishes on the WebSocket were refused too")
        #expect(feed.webSocketLost.withLock { $0 } == nil, "the publisher's WebSocket stayed open")
        let acknowledged = feed.acknowledged.withLock { $0 }
        let seqs = Set(acknowledged.values)
        #expect(seqs.count == acknowledged.count, "each key stored once")
        let last = Int64(acknowledged.count)
        #expect(seqs == Set(1...last), "the stream holds exactly the acknowledged events")
        #expect(try await database.psql("SELECT last_seq FROM streams WHERE name = 'emergencies'") == "\(last)\n")
        try await waitUntil("every subscriber received every acknowledged event", timeout: .seconds(30)) {
            audiences.allSatisfy { $0.received(all: seqs) }
        }
        expectEverySubscriberHasAll(audiences, last: last)
        for audience in audiences {
            let expected = reconnected.contains { $0 === audience } ? 2 : 1
            let connections = audience.probes.map { $0.snapshot.connections }
            #expect(connections.allSatisfy { $0 == expected }, "connections per subscriber, expected \(expected): \(connections)")
        }
        // The acks taken during the outage reach the store once it is back.
        try await waitUntil("every subscription's ack stored", timeout: .seconds(20)) {
            (try? await database.psql("SELECT count(*) FROM subscriptions WHERE acked_seq < \(last)")) == "0\n"
        }
    }

    /// Every subscriber of every audience has exactly the seqs 1...last, in order: the stream
    /// holds nothing but the feed's events, so any other list is a loss, a gap or a duplicate.
    static func expectEverySubscriberHasAll(_ audiences: [Audience], last: Int64) {
        let all = Array(1...last)
        for audience in audiences {
            for (i, probe) in audience.probes.enumerated() {
                let seqs = probe.snapshot.seqs
                if seqs != all {
                    let missing = Set(all).subtracting(seqs).sorted()
                    Issue.record(
                        "subscriber \(audience.configuration.clientPrefix ?? "")-\(i): \(seqs.count) events, not \(last); missing \(missing.prefix(20)), out of order \(probe.snapshot.outOfOrder)"
                    )
                }
            }
        }
    }

    enum Outage: String, Sendable, CaseIterable {
        /// `pg_ctl stop -m fast`: open transactions rolled back, connections closed.
        case fastStop
        /// `-m immediate`: everything dropped, and recovery from the WAL at the next start, as
        /// after a crash of the database server.
        case immediateStop
        /// An immediate stop, and the second broker SIGKILLed while the database is down (the
        /// acks it took meanwhile unsaved), started again once the database is back: its
        /// subscribers reconnect to it, resume and replay, and still see each event once.
        case immediateStopAndBrokerKilled
    }

    /// Two brokers on one PostgreSQL, 40 durable subscribers over both, a publisher with keys
    /// at 50/s (to both, or to the first when the second is to be killed). PostgreSQL stops
    /// until eight publishes were refused, then starts again.
    @Test(arguments: Outage.allCases)
    func aDatabaseRestartUnderLoadLosesNothingAndDropsNoSubscriber(outage: Outage) async throws {
        let database = try await PostgresServer.start()
        defer { database.destroy() }
        let store = database.url + "?timeout=1"
        let first = try await Self.serve(store: store)
        var second = try await Self.serve(store: store)
        defer {
            first.kill(SIGKILL)
            second.kill(SIGKILL)
        }
        let bases = [first, second].map { "http://127.0.0.1:\($0.port)" }
        let kind = "outage-\(UInt32.random(in: 0...UInt32.max))"
        let audiences = [
            Self.audience(count: 20, seed: bases[0], kind: kind, prefix: kind + "-a"),
            Self.audience(count: 20, seed: bases[1], kind: kind, prefix: kind + "-b"),
        ]
        async let _ = audiences[0].run()
        async let _ = audiences[1].run()
        try await waitUntil("every subscriber connected", timeout: .seconds(30)) { audiences.allSatisfy(\.allConnected) }

        let killing = outage == .immediateStopAndBrokerKilled
        let feed = KeyedFeed(urls: killing ? [bases[0]] : bases, kind: kind)
        async let publishing: Void = feed.run(rate: 50)
        try await waitUntil("100 publishes acknowledged") { feed.count >= 100 }

        try await database.stop(immediate: outage != .fastStop)
        let stopped = ContinuousClock.now
        let refusedBefore = feed.refused.load(ordering: .relaxed)
        try await waitUntil("8 publishes refused during the outage", timeout: .seconds(30)) {
            feed.refused.load(ordering: .relaxed) >= refusedBefore + 8
        }
        let readiness = try await waitForValue("both brokers say they are not ready", timeout: .seconds(10)) { () -> [String?]? in
            var codes: [String?] = []
            for base in bases {
                let (status, code) = await Self.readiness(base)
                guard status == 503 else { return nil }
                codes.append(code)
            }
            return codes
        }
        #expect(readiness == ["store_unavailable", "store_unavailable"])
        if killing { second.kill(SIGKILL) }
        let restarting = ContinuousClock.now
        try await database.restart()
        if killing {
            second = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "\(second.port)", "--store", store])
        }

        let afterRestart = feed.count
        try await waitUntil("100 publishes acknowledged after the restart", timeout: .seconds(30)) { feed.count >= afterRestart + 100 }
        feed.stop()
        await publishing
        try await feed.publishRefusedAgain(upTo: feed.highestKey)

        try await Self.expectNothingLost(
            feed: feed, outage: stopped..<restarting, audiences: audiences, reconnected: killing ? [audiences[1]] : [], database: database)
        #expect(await Self.readiness(bases[0]).0 == 200)
        // The second broker, when killed, published nothing: the one that restarted saw no outage.
        try await Self.expectNoLostCommitsReported(bases[0], refusedPublishes: true)
        try await Self.expectNoLostCommitsReported(bases[1], refusedPublishes: !killing)
    }

    /// The broker at `base` never found the database behind what it had seen committed, and
    /// counted the publishes it refused for the outage, if it had to refuse any.
    static func expectNoLostCommitsReported(_ base: String, refusedPublishes: Bool) async throws {
        let metrics = try await MetricsTests.metrics(base)
        #expect(MetricsTests.value("tocsin_store_lost_commits_total", in: metrics) ?? 0 == 0)
        if refusedPublishes {
            #expect((MetricsTests.value("tocsin_store_unavailable_total", in: metrics) ?? 0) > 0, "the outage was counted")
        }
    }

    /// A primary with a synchronous standby, a broker given both hosts, subscribers and a
    /// publisher with keys on it. The primary is SIGKILLed; publishes are refused until the
    /// standby is promoted, then the broker follows it and nothing acknowledged is missing.
    @Test func aBrokerFollowsAPromotedStandbyAndLosesNothingAcknowledged() async throws {
        let primary = try await PostgresServer.start(durable: true, settings: ["wal_level=replica", "max_wal_senders=5", "synchronous_commit=on"])
        defer { primary.destroy() }
        let standby = try await PostgresServer.startStandby(of: primary)
        defer { standby.destroy() }
        // Synchronous only once the standby follows: until then every commit would wait for it.
        try await primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        try await primary.psql("SELECT pg_reload_conf()")
        try await waitUntil("the standby replicates synchronously", timeout: .seconds(30)) {
            (try? await primary.psql("SELECT sync_state FROM pg_stat_replication")) == "sync\n"
        }
        let broker = try await Self.serve(
            store: "postgres://tocsin@127.0.0.1:\(primary.port),127.0.0.1:\(standby.port)/tocsin?timeout=1")
        defer { broker.kill(SIGKILL) }
        let base = "http://127.0.0.1:\(broker.port)"
        let kind = "failover-\(UInt32.random(in: 0...UInt32.max))"
        let audience = Self.audience(count: 20, seed: base, kind: kind, prefix: kind)
        async let _ = audience.run()
        try await waitUntil("every subscriber connected", timeout: .seconds(30)) { audience.allConnected }

        let feed = KeyedFeed(urls: [base], kind: kind)
        async let publishing: Void = feed.run(rate: 50)
        try await waitUntil("100 publishes acknowledged") { feed.count >= 100 }

        await primary.kill()
        let killed = ContinuousClock.now
        let refusedBefore = feed.refused.load(ordering: .relaxed)
        try await waitUntil("10 publishes refused with the primary gone", timeout: .seconds(30)) {
            feed.refused.load(ordering: .relaxed) >= refusedBefore + 10
        }
        #expect(await Self.readiness(base) == (503, "store_unavailable"))
        let promoting = ContinuousClock.now
        try await standby.promote()

        let afterPromotion = feed.count
        try await waitUntil("100 publishes acknowledged by the promoted standby", timeout: .seconds(30)) {
            feed.count >= afterPromotion + 100
        }
        feed.stop()
        await publishing
        try await feed.publishRefusedAgain(upTo: feed.highestKey)

        try await Self.expectNothingLost(feed: feed, outage: killed..<promoting, audiences: [audience], database: standby)
        #expect(await Self.readiness(base).0 == 200)
        try await Self.expectNoLostCommitsReported(base, refusedPublishes: true)
    }

    /// A client that comes back while the database is down is refused whole, with the
    /// retryable `store_unavailable`, on a connection it may keep: once the database is back,
    /// the same hello on the same connection resumes its subscription and replays what it missed.
    @Test func aHelloDuringAnOutageIsRefusedWholeAndWorksOnTheSameConnectionOnceTheDatabaseIsBack() async throws {
        let database = try await PostgresServer.start()
        defer { database.destroy() }
        // 2 s: the setup before the outage must not time out on a loaded machine.
        let configuration = PostgresStore.Configuration(location: try PostgresLocation(parsing: database.url + "?timeout=2"))
        try await TestBroker.with(store: { _ in .postgres(configuration) }) { broker in
            let subscription = try await Connection.run(url: broker.webSocketURL, logger: Self.logger) { connection in
                _ = try await connection.hello(client: "comes-back")
                return try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "resume"])
            }
            // Published while the client was away.
            for _ in 1...20 {
                _ = try await broker.broker.publish(stream: "emergencies", events: [Feed.event(kind: "resume", sent: 0)])
            }
            try await Connection.run(url: broker.webSocketURL, logger: Self.logger) { connection in
                let inbox = Inbox(connection)
                try await database.stop()
                let refused = await #expect(throws: TocsinError.self) { _ = try await connection.hello(client: "comes-back") }
                #expect(refused?.code == .storeUnavailable, "\(String(describing: refused))")
                try await database.restart()
                let welcome = try await waitForValue("the same connection's hello is answered", timeout: .seconds(30)) {
                    try? await connection.hello(client: "comes-back")
                }
                #expect(welcome.subscriptions.map(\.subscription) == [subscription.subscription])
                let notifications = try await inbox.notifications(20)
                #expect(notifications.map(\.seq) == Array(1...20), "what it missed, replayed in order")
            }
        }
    }
}
}
