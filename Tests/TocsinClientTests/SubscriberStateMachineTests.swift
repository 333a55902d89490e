import Testing
import TocsinCore

@testable import TocsinClient

/// The subscriber's decisions, driven directly with literal times and random draws: no sockets,
/// no tasks, no sleeps.
struct SubscriberStateMachineTests {
    typealias Machine = SubscriberStateMachine

    static let request = SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": "fire"], from: .earliest)
    static let a = Machine.Target(url: "ws://a/v1/ws", broker: "a")
    static let b = Machine.Target(url: "ws://b/v1/ws", broker: "b")
    static let c = Machine.Target(url: "ws://c/v1/ws", broker: "c")

    /// Backoff 100 ms doubling up to 1 s; with jitter 1 every delay is its ceiling.
    static func machine(ackEvery: Int = 64) -> Machine {
        Machine(
            requests: [request], backoff: Backoff(initial: .milliseconds(100), maximum: .seconds(1)), ackInterval: .milliseconds(50),
            ackEvery: ackEvery)
    }

    static func info(seq: Int64, epoch: String = "e1", recovered: Bool = true) -> SubscriptionInfo {
        SubscriptionInfo(
            subscription: "s1", channel: "EmergenciesOfKind", params: ["kind": "fire"], stream: "emergencies",
            position: StreamPosition(epoch: epoch, seq: seq), recovered: recovered)
    }

    /// Started, located `a` and resumed there as connection 1, at 1 s.
    static func connectedToA(ackEvery: Int = 64, seq: Int64 = 10) -> Machine {
        var m = machine(ackEvery: ackEvery)
        _ = m.start()
        _ = m.located(a)
        _ = m.connected(1)
        _ = m.resumed(1, broker: "a", subscriptions: [info(seq: seq)], now: .seconds(1))
        return m
    }

    /// Connected to `a` (1), ordered to `b` (2), which is opening.
    static func migratingToB() -> Machine {
        var m = connectedToA()
        _ = m.migrateOrdered(1, to: b, reason: "rebalance")
        return m
    }

    static func event(_ seq: Int64) -> ServerMessage.Notification { .event(#"{"seq":\#(seq)}"#) }

    @Test func itLocatesConnectsAndResumesFromWhereTheCallerAsked() {
        var m = Self.machine()
        #expect(m.start() == [.locate(exclude: [])])
        #expect(m.start() == [], "started once")
        #expect(m.located(Self.a) == [.connect(1, to: Self.a)])
        #expect(m.phase == .connecting(1))
        #expect(m.connected(1) == .resume([Self.request]), "the first time: from where the caller asked")
        let info = Self.info(seq: 10)
        #expect(
            m.resumed(1, broker: "a", subscriptions: [info], now: .seconds(1)) == [.report(.connected(broker: "a", subscriptions: [info]))])
        #expect(m.phase == .connected(1))
        #expect(m.positions["s1"] == StreamPosition(epoch: "e1", seq: 10))
    }

    @Test func aPositionTheBrokerCannotResumeIsReportedBeforeTheConnection() {
        var m = Self.machine()
        _ = m.start()
        _ = m.located(Self.a)
        let lost = Self.info(seq: 3, recovered: false)
        #expect(
            m.resumed(1, broker: "a", subscriptions: [lost], now: .zero) == [
                .report(.notRecovered(lost)), .report(.connected(broker: "a", subscriptions: [lost])),
            ])
    }

    @Test func backoffGrowsWhileNothingWorksAndResetsAfterASuccess() {
        var m = Self.machine()
        _ = m.start()
        // Locating fails again and again: 100, 200, 400, 800 ms, then capped at 1 s.
        var now: Duration = .zero
        for expected: Duration in [
            .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1),
        ] {
            let actions = m.locateFailed(error: "refused", now: now, jitter: 1)
            #expect(actions == [.report(.disconnected(error: "refused", retryIn: expected)), .schedule(.reconnect, at: now + expected)])
            #expect(m.phase == .waiting(until: now + expected))
            // A timer that fires early is set again; on time, the search starts.
            #expect(m.timerFired(.reconnect, now: now + expected - .milliseconds(1)) == [.schedule(.reconnect, at: now + expected)])
            now += expected
            #expect(m.timerFired(.reconnect, now: now) == [.locate(exclude: [])])
        }
        #expect(m.attempt == 6)
        // Jitter draws within the ceiling: half of it.
        #expect(
            m.locateFailed(error: "refused", now: now, jitter: 0.5) == [
                .report(.disconnected(error: "refused", retryIn: .milliseconds(500))), .schedule(.reconnect, at: now + .milliseconds(500)),
            ])
        now += .milliseconds(500)
        _ = m.timerFired(.reconnect, now: now)
        // A connection that is found but lost before it resumed is a failure too: `a` is avoided.
        _ = m.located(Self.a)
        #expect(m.connectionEnded(1, error: "reset", now: now, jitter: 1).contains(.schedule(.reconnect, at: now + .seconds(1))))
        now += .seconds(1)
        #expect(m.timerFired(.reconnect, now: now) == [.locate(exclude: ["a"])])
        // Success resets both.
        _ = m.located(Self.b)
        _ = m.resumed(2, broker: "b", subscriptions: [Self.info(seq: 10)], now: now)
        #expect(m.attempt == 0)
        #expect(m.exclude.isEmpty)
        // The next loss starts again from the initial backoff, avoiding the broker that failed.
        #expect(
            m.connectionEnded(2, error: "gone", now: now, jitter: 1) == [
                .log(.warning, "connection lost; reconnecting", error: "gone"),
                .report(.disconnected(error: "gone", retryIn: .milliseconds(100))), .schedule(.reconnect, at: now + .milliseconds(100)),
            ])
        #expect(m.timerFired(.reconnect, now: now + .milliseconds(100)) == [.locate(exclude: ["b"])])
        #expect(m.counts.reconnections == 2)
    }

    @Test func aReconnectResumesFromTheAcknowledgedPositionNotTheRequestedOne() {
        var m = Self.connectedToA()
        _ = m.connectionEnded(1, error: "gone", now: .seconds(2), jitter: 0)
        _ = m.timerFired(.reconnect, now: .seconds(2))
        #expect(m.located(Self.b) == [.connect(2, to: Self.b)])
        let latest = SubscriptionRequest(channel: Self.request.channel, params: Self.request.params, from: .latest)
        #expect(m.connected(2) == .resume([latest]))
        // The broker resumes where the acks left it; what was delivered meanwhile is dropped by seq.
        _ = m.resumed(2, broker: "b", subscriptions: [Self.info(seq: 8)], now: .seconds(3))
        #expect(m.received(subscription: "s1", seq: 9, Self.event(9)) == .duplicate)
        #expect(m.received(subscription: "s1", seq: 10, Self.event(10)) == .duplicate)
        guard case .deliver(let n) = m.received(subscription: "s1", seq: 11, Self.event(11)) else {
            Issue.record("seq 11 is new")
            return
        }
        #expect(n.seq == 11 && n.channel == "EmergenciesOfKind" && n.events == [EventPayload(seq: 11, json: #"{"seq":11}"#)])
    }

    @Test func migrationIsMakeBeforeBreak() {
        var m = Self.connectedToA()
        #expect(m.migrateOrdered(1, to: Self.b, reason: "rebalance") == [.connect(2, to: Self.b)])
        #expect(m.phase == .migrating(from: 1, to: 2, reason: "rebalance"))
        #expect(m.migrateOrdered(1, to: Self.c, reason: "rebalance") == [], "one move at a time")
        #expect(m.connected(2) == .resume([SubscriptionRequest(channel: Self.request.channel, params: Self.request.params, from: .latest)]))
        // Only once the new connection is resumed is the old one closed.
        #expect(
            m.resumed(2, broker: "b", subscriptions: [Self.info(seq: 10)], now: .seconds(2)) == [
                .close(1), .report(.migrated(from: "a", to: "b", reason: "rebalance")),
            ])
        #expect(m.phase == .connected(2))
        #expect(m.counts.migrationsFollowed == 1)
        // The closed connection's end changes nothing.
        #expect(m.connectionEnded(1, error: "closed", now: .seconds(2), jitter: 1) == [])
        #expect(m.phase == .connected(2))
        #expect(m.migrateOrdered(1, to: Self.c, reason: "drain") == [], "an order from the old connection is stale")
    }

    /// The migrate order arrives, then the current connection drops before the new one is up:
    /// the new connection carries on, as the current one; no backoff, no reconnect.
    @Test func aMigrationDuringFailoverCarriesOnWithTheNewConnection() {
        var m = Self.migratingToB()
        #expect(m.connectionEnded(1, error: "a died", now: .seconds(2), jitter: 1) == [])
        #expect(m.phase == .connecting(2))
        _ = m.connected(2)
        let info = Self.info(seq: 10)
        #expect(
            m.resumed(2, broker: "b", subscriptions: [info], now: .seconds(3)) == [.report(.connected(broker: "b", subscriptions: [info]))])
        #expect(m.phase == .connected(2))
        #expect(m.counts == .init(duplicatesDropped: 0, migrationsFollowed: 0, reconnections: 0))
        #expect(m.exclude.isEmpty && m.attempt == 0)
    }

    /// The old connection dropped mid-move, then the new one fails too: that is a failover,
    /// avoiding the broker that failed, with backoff.
    @Test func aFailoverWhileMigratingBacksOffAndAvoidsTheTarget() {
        var m = Self.migratingToB()
        _ = m.connectionEnded(1, error: "a died", now: .seconds(2), jitter: 1)
        #expect(
            m.connectionEnded(2, error: "b refused", now: .seconds(3), jitter: 1) == [
                .log(.warning, "connection lost; reconnecting", error: "b refused"),
                .report(.disconnected(error: "b refused", retryIn: .milliseconds(100))), .schedule(.reconnect, at: .milliseconds(3100)),
            ])
        #expect(m.timerFired(.reconnect, now: .milliseconds(3100)) == [.locate(exclude: ["b"])])
        #expect(m.counts.reconnections == 1)
    }

    /// The move's target fails while the old connection is up: the old broker wants this client
    /// gone, so the old connection is closed too and the client reconnects through `locate`.
    @Test func aMigrationWhoseTargetFailsLeavesTheOldBrokerToo() {
        var m = Self.migratingToB()
        #expect(
            m.connectionEnded(2, error: "b refused", now: .seconds(2), jitter: 1) == [
                .log(.warning, "migration failed; reconnecting through assign", error: "b refused"), .close(1),
            ])
        #expect(m.phase == .leaving(1))
        #expect(m.migrateOrdered(1, to: Self.c, reason: "rebalance") == [], "no new move from a connection being left")
        // Notifications still arriving on the old connection are delivered.
        #expect(m.received(subscription: "s1", seq: 11, Self.event(11)) != .duplicate)
        let actions = m.connectionEnded(1, error: "closed", now: .seconds(2), jitter: 1)
        #expect(actions.contains(.schedule(.reconnect, at: .milliseconds(2100))))
        #expect(m.timerFired(.reconnect, now: .milliseconds(2100)) == [.locate(exclude: ["a"])])
        #expect(m.counts.migrationsFollowed == 0)
    }

    @Test func eachSeqIsDeliveredOnceAcrossTheSwitch() {
        var m = Self.migratingToB()
        // Both connections deliver during the move; whichever comes first wins.
        #expect(m.received(subscription: "s1", seq: 11, Self.event(11)) != .duplicate)
        _ = m.resumed(2, broker: "b", subscriptions: [Self.info(seq: 10)], now: .seconds(2))
        #expect(m.positions["s1"]?.seq == 11, "the new broker's older position does not move delivery back")
        #expect(m.received(subscription: "s1", seq: 11, Self.event(11)) == .duplicate)
        #expect(m.received(subscription: "s1", seq: 12, Self.event(12)) != .duplicate)
        #expect(m.received(subscription: "s1", seq: 12, Self.event(12)) == .duplicate)
        // A repetitive period's batch overlapping what was delivered keeps only the new events.
        let batch = [11, 12, 13].map { EventPayload(seq: $0, json: #"{"seq":\#($0)}"#) }
        #expect(
            m.received(subscription: "s1", seq: 13, .events(batch))
                == .deliver(Notification(subscription: "s1", channel: "EmergenciesOfKind", seq: 13, events: [batch[2]], count: 1)))
        #expect(m.counts.duplicatesDropped == 2)
        // A new epoch (the stream was recreated) restarts seqs from the broker's position.
        #expect(
            m.subscriptionChanged(Self.info(seq: 0, epoch: "e2", recovered: false)) == [
                .report(.notRecovered(Self.info(seq: 0, epoch: "e2", recovered: false)))
            ])
        #expect(
            m.received(subscription: "s1", seq: 1, .count(1))
                == .deliver(Notification(subscription: "s1", channel: "EmergenciesOfKind", seq: 1, events: [], count: 1)))
    }

    @Test func acksAreBatchedAndSurviveAFailedSend() {
        var m = Self.connectedToA(ackEvery: 3)
        // The first processed notification sets the ack timer; the next ones join the batch.
        #expect(m.processed(subscription: "s1", seq: 11, now: .seconds(2)) == [.schedule(.ack, at: .milliseconds(2050))])
        #expect(m.processed(subscription: "s1", seq: 12, now: .seconds(2)) == [])
        #expect(m.timerFired(.ack, now: .milliseconds(2050)) == [.ack(["s1": 12], on: 1)])
        // While a batch is on its way, the next waits for it.
        #expect(m.processed(subscription: "s1", seq: 13, now: .seconds(3)) == [])
        #expect(m.acksSent(now: .seconds(3)) == [.schedule(.ack, at: .milliseconds(3050))])
        // `ackEvery` processed: at once.
        _ = m.processed(subscription: "s1", seq: 14, now: .seconds(3))
        #expect(m.processed(subscription: "s1", seq: 15, now: .seconds(3)) == [.ack(["s1": 15], on: 1)])
        // Not sent (the connection died): kept, and sent on the next connection.
        #expect(m.acksFailed(unsent: ["s1": 15], now: .seconds(4)) == [.schedule(.ack, at: .milliseconds(4050))])
        _ = m.connectionEnded(1, error: "gone", now: .seconds(4), jitter: 0)
        #expect(m.timerFired(.ack, now: .milliseconds(4050)) == [], "no connection to send them on")
        #expect(m.unacked == ["s1": 15])
        _ = m.timerFired(.reconnect, now: .seconds(5))
        _ = m.located(Self.b)
        #expect(
            m.resumed(2, broker: "b", subscriptions: [Self.info(seq: 15)], now: .seconds(5)).contains(
                .schedule(.ack, at: .milliseconds(5050))))
        #expect(m.timerFired(.ack, now: .milliseconds(5050)) == [.ack(["s1": 15], on: 2)])
    }

    @Test func aRequestThatCanNeverWorkStopsEverything() {
        var m = Self.migratingToB()
        let error = TocsinError(.unknownChannel, "no channel named 'X'")
        #expect(
            m.connectionFailed(2, error: error) == [
                .log(.error, "subscription request refused; stopping", error: "unknown_channel: no channel named 'X'"), .close(1),
                .close(2),
                .report(.failed(error)), .finish,
            ])
        #expect(m.phase == .stopped)
        #expect(m.stop() == [])
    }

    /// Stopping closes whatever is open, acknowledges what the app finished on a resumed
    /// connection, and finishes; nothing happens afterwards.
    @Test(arguments: ["idle", "waiting", "locating", "connecting", "connected", "migrating", "leaving"])
    func stopInEveryState(_ state: String) {
        var m = Self.machine()
        var expected: [Machine.Action] = [.finish]
        switch state {
        case "idle":
            break
        case "waiting":
            _ = m.start()
            _ = m.locateFailed(error: "refused", now: .zero, jitter: 1)
        case "locating":
            _ = m.start()
        case "connecting":
            _ = m.start()
            _ = m.located(Self.a)
            expected = [.close(1), .finish]
        case "connected":
            m = Self.connectedToA()
            _ = m.processed(subscription: "s1", seq: 11, now: .seconds(2))
            expected = [.ack(["s1": 11], on: 1), .close(1), .finish]
        case "migrating":
            m = Self.migratingToB()
            _ = m.processed(subscription: "s1", seq: 11, now: .seconds(2))
            expected = [.ack(["s1": 11], on: 1), .close(1), .close(2), .finish]
        default:
            m = Self.migratingToB()
            _ = m.connectionEnded(2, error: "b refused", now: .seconds(2), jitter: 1)
            _ = m.processed(subscription: "s1", seq: 11, now: .seconds(2))
            expected = [.close(1), .finish]
        }
        #expect(m.stop() == expected)
        #expect(m.phase == .stopped)
        #expect(m.stop() == [], "stopped once")
        // Whatever was under way comes back to nothing.
        #expect(m.located(Self.c) == [])
        #expect(m.locateFailed(error: "x", now: .seconds(9), jitter: 1) == [])
        #expect(m.timerFired(.reconnect, now: .seconds(60)) == [])
        #expect(m.timerFired(.ack, now: .seconds(60)) == [])
        #expect(m.connected(1) == .close)
        #expect(m.connected(2) == .close)
        #expect(m.resumed(2, broker: "b", subscriptions: [], now: .seconds(9)) == [])
        #expect(m.connectionEnded(1, error: "closed", now: .seconds(9), jitter: 1) == [])
        #expect(m.connectionEnded(2, error: "closed", now: .seconds(9), jitter: 1) == [])
        #expect(m.migrateOrdered(1, to: Self.c, reason: "drain") == [])
        #expect(m.processed(subscription: "s1", seq: 12, now: .seconds(9)) == [])
        #expect(m.acksFailed(unsent: ["s1": 11], now: .seconds(9)) == [])
    }
}
