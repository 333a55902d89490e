import Logging
import Synchronization
import Testing
@testable import TocsinBroker

/// The outbox, its wake-ups and the slow-consumer policy, driven directly (no sockets).
struct SessionTests {
    final class Wakes: Sendable {
        let count = Atomic<Int>(0)
    }

    func session(max: Int, wakes: Wakes) -> Session {
        Session(id: "t", maxQueuedFrames: max, logger: Logger(label: "t")) { _ in wakes.count.add(1, ordering: .relaxed) }
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

    @Test func tooManyQueuedFramesCloseTheSessionAsASlowConsumer() {
        let wakes = Wakes()
        let s = session(max: 3, wakes: wakes)
        for i in 0..<3 { #expect(s.send(.text("\(i)"))) }
        #expect(!s.send(.text("overflow")))
        #expect(!s.send(.text("after")))
        #expect(s.take() == .close(.slowConsumer))
        #expect(s.take() == .finished)
    }

    @Test func aTransportThatCannotKeepUpClosesTheSession() {
        let wakes = Wakes()
        let s = session(max: 100, wakes: wakes)
        #expect(s.send(.text("a")))
        #expect(s.take() == .frames([.text("a")]))
        s.overflowed()
        #expect(!s.send(.text("b")))
        #expect(s.take() == .close(.slowConsumer))
    }

    @Test func migrateIsSentOnceToIdentifiedSessionsAndTimesOut() {
        let wakes = Wakes()
        let s = session(max: 10, wakes: wakes)
        #expect(!s.migrate(to: "ws://b2/v1/ws", broker: "b2", reason: "rebalance"), "an anonymous connection (no hello) is not moved")
        #expect(s.identify(as: "alice"))
        #expect(s.canMigrate)
        #expect(s.migrate(to: "ws://b2/v1/ws", broker: "b2", reason: "rebalance"))
        #expect(!s.migrate(to: "ws://b3/v1/ws", broker: "b3", reason: "rebalance"), "one move at a time")
        #expect(s.isMigrating && !s.canMigrate)
        guard case .frames(let frames) = s.take(), case .text(let text)? = frames.first else {
            Issue.record("expected the migrate frame")
            return
        }
        #expect(text == #"{"type":"migrate","to":"ws://b2/v1/ws","broker":"b2","reason":"rebalance"}"#)
        #expect(!s.migrating(before: .now - .seconds(60)))
        #expect(s.migrating(before: .now + .seconds(1)))
        s.close(.migrationTimedOut)
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
