import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing
@testable import TocsinBroker
import TocsinClient
import TocsinTesting

/// The event-loop watch: first on an embedded loop, which runs its queue only when told (so a
/// "blocked" loop is one the test has not run yet), then on the broker's real loops.
@Suite(.timeLimit(.minutes(1)))
struct EventLoopWatchTests {
    let logger = Logger(label: "watch-test")

    @Test func aLoopThatDoesNotRunItsProbeIsReportedOnceAndItsDelayRecorded() {
        let loop = EmbeddedEventLoop()
        let watch = EventLoopWatch(group: loop, interval: .milliseconds(10), threshold: .milliseconds(200), logger: logger)
        // A probe queued a second ago that the loop has not run: stuck.
        watch.probe(now: .now - .seconds(1))
        #expect(watch.stalls == 0, "nothing is known until the next probe looks")
        watch.probe(now: .now)
        #expect(watch.stalls == 1)
        #expect(watch.longestDelay >= .seconds(1))
        // Still stuck at the next look: the same stall, not a new one; and no second probe queued.
        watch.probe(now: .now)
        #expect(watch.stalls == 1)
        // The loop turns: the late probe runs, and counts no further.
        loop.run()
        #expect(watch.stalls == 1)
        // A prompt loop is no stall.
        watch.probe(now: .now)
        loop.run()
        #expect(watch.stalls == 1)
        // A probe that runs late, without having been seen waiting, is a stall too.
        watch.probe(now: .now - .milliseconds(500))
        loop.run()
        #expect(watch.stalls == 2)
        #expect(watch.longestDelay >= .seconds(1))
    }

    @Test func aPromptLoopIsNeverAStall() {
        let loop = EmbeddedEventLoop()
        let watch = EventLoopWatch(group: loop, interval: .milliseconds(10), threshold: .milliseconds(200), logger: logger)
        for _ in 0..<100 {
            watch.probe(now: .now)
            loop.run()
        }
        #expect(watch.stalls == 0)
        #expect(watch.longestDelay < .milliseconds(200))
    }

    /// Blocks one of the server's event loops until the broker's watch has noticed (so the block
    /// lasts about one threshold, whatever the machine's speed), then lets it go.
    @Test func theBrokerNoticesABlockedEventLoop() async throws {
        try await TestBroker.with({
            $0.eventLoopWatchInterval = .milliseconds(10)
            $0.eventLoopStallThreshold = .milliseconds(50)
        }) { broker in
            let watch = try #require(broker.broker.eventLoopWatch)
            try await waitUntil("the watch probes the loops") { watch.longestDelay > .zero }
            let started = Atomic<Bool>(false)
            let released = Atomic<Bool>(false)
            let noticed = Atomic<Bool>(false)
            watch.loops[0].execute {
                // Blocks this loop (the point of the test) until the watch has reported it.
                started.store(true, ordering: .releasing)
                while !released.load(ordering: .acquiring) { usleep(1000) }
                noticed.store(true, ordering: .releasing)
            }
            try await waitUntil("the loop is blocked") { started.load(ordering: .acquiring) }
            // Counted from here on, on this loop only: a stall elsewhere cannot pass the test.
            let before = watch.stalls(ofLoop: 0)
            do {
                try await waitUntil("the watch reports the blocked loop") { watch.stalls(ofLoop: 0) > before }
            } catch {
                released.store(true, ordering: .releasing)
                throw error
            }
            released.store(true, ordering: .releasing)
            try await waitUntil("the loop runs again") { noticed.load(ordering: .acquiring) }
            // The broker still answers on every loop.
            _ = try await HTTPCall.call(.GET, broker.httpURL + "/healthz")
        }
    }
}
