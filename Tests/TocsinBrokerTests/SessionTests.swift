import Logging
import Testing
@testable import TocsinBroker

/// The outbox and the slow-consumer policy, driven directly (no sockets).
struct SessionTests {
    func session(max: Int) -> Session {
        Session(id: "t", maxQueuedFrames: max, logger: Logger(label: "t"))
    }

    @Test func framesComeOutInOrderAndInBatches() async {
        let s = session(max: 10)
        #expect(s.send(.text("a")))
        #expect(s.send(.notify(prefix: "p", suffix: "1")))
        guard case .frames(let frames) = await s.next() else {
            Issue.record("expected frames")
            return
        }
        #expect(frames.count == 2)
        if case .text(let t) = frames[0] { #expect(t == "a") } else { Issue.record("order") }
    }

    @Test func overflowClosesTheSessionAsASlowConsumer() async {
        let s = session(max: 3)
        for i in 0..<3 { #expect(s.send(.text("\(i)"))) }
        #expect(!s.send(.text("overflow")))
        #expect(!s.send(.text("after")))
        guard case .close(.slowConsumer) = await s.next() else {
            Issue.record("expected a slow-consumer close")
            return
        }
    }

    @Test func aFinishedSessionRefusesFramesAndWakesItsWriter() async {
        let s = session(max: 3)
        async let next = s.next()
        s.finish()
        guard case .finished = await next else {
            Issue.record("expected finished")
            return
        }
        #expect(!s.send(.text("late")))
    }
}
