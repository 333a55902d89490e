import NIOCore
import NIOEmbedded
import Testing
@testable import TocsinBroker

/// One keepalive timer per event loop: every connection's turn comes once per period, the turns
/// are spread over the period, and the timer runs only while there are connections.
@Suite struct KeepaliveSweepTests {
    final class Target: KeepaliveTarget {
        let loop: EmbeddedEventLoop
        var visits: [NIODeadline] = []
        var onDue: () -> Void = {}

        init(_ loop: EmbeddedEventLoop) { self.loop = loop }

        func keepaliveDue() {
            visits.append(loop.now)
            onDue()
        }
    }

    @Test func eachTurnComesOncePerPeriodSpreadOverIt() {
        let loop = EmbeddedEventLoop()
        let sweep = KeepaliveSweep<Target>(eventLoop: loop, period: .seconds(30), slots: 30)
        #expect(!sweep.isRunning)
        let start = loop.now
        // A reconnect storm: all join in the same instant.
        let targets = (0..<95).map { _ in Target(loop) }
        let slots = targets.map { sweep.add($0) }
        #expect(sweep.isRunning && sweep.count == 95)
        var perStep: [Int] = []
        for _ in 0..<90 {
            let before = targets.reduce(0) { $0 + $1.visits.count }
            loop.advanceTime(by: .seconds(1))
            perStep.append(targets.reduce(0) { $0 + $1.visits.count } - before)
        }
        for target in targets {
            #expect(target.visits.count == 3)
            #expect(target.visits[0] - start <= .seconds(30), "the first turn within one period")
            #expect(zip(target.visits.dropFirst(), target.visits).allSatisfy { $0 - $1 == .seconds(30) }, "then one per period")
        }
        #expect(perStep.max() == 4, "95 over 30 slots: at most 4 in one tick, not all 95")

        // Those that leave get no more turns; the rest go on.
        for (target, slot) in zip(targets.prefix(50), slots.prefix(50)) { sweep.remove(target, slot: slot) }
        sweep.remove(targets[0], slot: slots[0])  // twice: nothing happens
        #expect(sweep.count == 45)
        loop.advanceTime(by: .seconds(30))
        #expect(targets.prefix(50).allSatisfy { $0.visits.count == 3 })
        #expect(targets.dropFirst(50).allSatisfy { $0.visits.count == 4 })

        // The last one out stops the timer; the next one in starts it again.
        for (target, slot) in zip(targets.dropFirst(50), slots.dropFirst(50)) { sweep.remove(target, slot: slot) }
        #expect(!sweep.isRunning && sweep.count == 0)
        let late = Target(loop)
        let joined = loop.now
        _ = sweep.add(late)
        #expect(sweep.isRunning)
        loop.advanceTime(by: .seconds(60))
        #expect(late.visits.count == 2)
        #expect(late.visits.first.map { $0 - joined <= .seconds(30) } == true)
    }

    /// A connection closed during its turn (no pong for a whole period) leaves the sweep then.
    @Test func aTargetMayLeaveDuringItsTurn() {
        let loop = EmbeddedEventLoop()
        let sweep = KeepaliveSweep<Target>(eventLoop: loop, period: .seconds(3), slots: 3)
        let targets = (0..<6).map { _ in Target(loop) }
        let slots = targets.map { sweep.add($0) }
        for (target, slot) in zip(targets, slots) {
            target.onDue = { [unowned target] in sweep.remove(target, slot: slot) }
        }
        loop.advanceTime(by: .seconds(9))
        #expect(targets.allSatisfy { $0.visits.count == 1 })
        #expect(sweep.count == 0 && !sweep.isRunning)
    }
}
