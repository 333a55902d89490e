import Logging
import Synchronization
import Testing
@testable import TocsinBroker
import TocsinCore

/// The outbox, its wake-ups and the slow-consumer policy, driven directly (no sockets).
struct SessionTests {
    final class Wakes: Sendable {
        let count = Atomic<Int>(0)
    }

    func session(max: Int, wakes: Wakes) -> Session {
        Session(id: "t", maxOutboundBytes: max, logger: Logger(label: "t")) { _ in wakes.count.add(1, ordering: .relaxed) }
    }

    @Test func aBurstCostsOneWakeUpAndDrainsInOrder() {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        #expect(s.send(.text("a")))
        #expect(s.send(.notify(prefix: "p", suffix: "1")))
        #expect(s.send(.text("b")))
        #expect(wakes.count.load(ordering: .relaxed) == 1)
        #expect(s.take() == .frames([.text("a"), .notify(prefix: "p", suffix: "1"), .text("b")]))
        // Frames sent while draining join the same drain, without another wake-up.
        #expect(s.send(.text("c")))
        #expect(wakes.count.load(ordering: .relaxed) == 1)
        #expect(s.take() == .frames([.text("c")]))
        #expect(s.take() == .idle)
        // Once idle, the next frame wakes the drainer again.
        #expect(s.send(.text("d")))
        #expect(wakes.count.load(ordering: .relaxed) == 2)
    }

    @Test func moreThanTheBoundInBytesClosesTheSessionAsASlowConsumer() {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        // 4 + 4 + 4 bytes: the third finds 8 pending (not over 10) and is queued; the fourth finds 12.
        for text in ["aaaa", "bbbb", "cccc"] { #expect(s.send(.text(text))) }
        #expect(!s.send(.text("dddd")))
        #expect(!s.send(.text("after")))
        #expect(s.take() == .close(.slowConsumer))
        #expect(s.take() == .finished)
    }

    @Test func oneFrameLargerThanTheBoundStillGoesOutAlone() {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        let big = String(repeating: "x", count: 100)
        #expect(s.send(.text(big)))
        #expect(s.take() == .frames([.text(big)]))
        s.transportBuffered(0)
        #expect(s.send(.text("next")))
    }

    @Test func bytesTheSocketHasNotTakenCountUntilTheTransportSaysSo() {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        #expect(s.send(.text("0123456789a")))
        #expect(s.take() == .frames([.text("0123456789a")]))
        // Handed to the transport, not yet written: still pending.
        #expect(!s.send(.text("b")))
        #expect(s.take() == .close(.slowConsumer))
    }

    @Test func aTransportThatCannotKeepUpClosesTheSession() {
        let wakes = Wakes()
        let s = session(max: 100, wakes: wakes)
        #expect(s.send(.text("a")))
        #expect(s.take() == .frames([.text("a")]))
        s.transportBuffered(101)
        #expect(!s.send(.text("b")))
        #expect(s.take() == .close(.slowConsumer))
    }

    /// The drain reports what the socket has not taken in its next `take`, one step instead of
    /// two: the same bound, the same waiters released, the same close.
    @Test func aDrainReportsTheSocketsBacklogInItsNextTake() async {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        #expect(s.send(.text("01234567")))
        #expect(s.take() == .frames([.text("01234567")]))
        let waiting = Task { await s.waitForRoom() }
        while !s.hasWaiters { await Task.yield() }
        #expect(s.take(transportBuffered: 6) == .idle)
        #expect(s.hasWaiters, "6 of 10 is not room yet")
        #expect(s.send(.text("ab")))
        #expect(s.take(transportBuffered: 0) == .frames([.text("ab")]))
        await waiting.value
        #expect(s.take(transportBuffered: 11) == .close(.slowConsumer), "past the bound")
        #expect(!s.send(.text("c")))
    }

    @Test func aReplayWaitsForRoomInsteadOfOverflowing() async {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        #expect(s.send(.text("01234567")))
        #expect(!s.hasRoom)
        #expect(s.take() == .frames([.text("01234567")]))
        s.transportBuffered(8)
        let waiting = Task { await s.waitForRoom() }
        // Still not below half the bound: the waiter stays.
        s.transportBuffered(6)
        #expect(!s.hasRoom)
        s.transportBuffered(0)
        await waiting.value
        #expect(s.hasRoom)
        // A closed session releases its waiters too.
        #expect(s.send(.text("0123456789")))
        let released = Task { await s.waitForRoom() }
        s.close(.slowConsumer)
        _ = s.take()
        await released.value
    }

    @Test func migrateIsSentOnceToIdentifiedSessionsAndTimesOut() {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        let clock = ManualElapsed()
        let registry = SessionRegistry(logger: Logger(label: "t"), metrics: BrokerMetrics(), now: clock.now)
        let b2 = BrokerSummary.testTarget("b2")
        registry.opened(s)
        #expect(registry.migrate(count: 1, to: b2, reason: "rebalance") == 0, "an anonymous connection (no hello) is not moved")
        #expect(s.identify(as: "alice"))
        registry.identified(s)
        #expect(registry.migrate(count: 1, to: b2, reason: "rebalance") == 1)
        #expect(registry.migrate(count: 1, to: .testTarget("b3"), reason: "rebalance") == 0, "one move at a time")
        #expect(registry.load() == SessionRegistry.Load(connections: 0, subscriptions: 0, migrating: 1))
        guard case .frames(let frames) = s.take(), case .text(let text)? = frames.first else {
            Issue.record("expected the migrate frame")
            return
        }
        #expect(text == #"{"type":"migrate","to":"ws://b2/v1/ws","broker":"b2","reason":"rebalance"}"#)
        clock.advance(.seconds(30))
        registry.closeStaleMigrations(olderThan: .seconds(30))
        #expect(s.take() == .idle, "not stale until the timeout has passed")
        clock.advance(.milliseconds(1))
        registry.closeStaleMigrations(olderThan: .seconds(30))
        #expect(s.take() == .close(.migrationTimedOut))
        #expect(!s.send(.text("late")))
    }

    @Test func aFinishedSessionRefusesFrames() {
        let wakes = Wakes()
        let s = session(max: 3, wakes: wakes)
        s.finish()
        #expect(!s.send(.text("late")))
        #expect(s.take() == .finished)
    }
}

/// Elapsed time a test moves by hand.
final class ManualElapsed: Sendable {
    private let elapsed = Mutex<Duration>(.zero)
    var now: @Sendable () -> Duration { { self.elapsed.withLock { $0 } } }
    func advance(_ by: Duration) { elapsed.withLock { $0 += by } }
}

extension BrokerSummary {
    static func testTarget(_ id: String) -> BrokerSummary {
        BrokerSummary(
            id: id, incarnation: "i-\(id)", webSocketURL: "ws://\(id)/v1/ws", httpURL: "http://\(id)", region: "local", location: nil,
            capacity: 100, state: .active, load: BrokerLoad(connections: 0, subscriptions: 0))
    }
}
