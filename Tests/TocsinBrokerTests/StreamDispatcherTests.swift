import Foundation
import Testing
import TocsinCore
import TocsinTesting

@testable import TocsinBroker
@testable import TocsinStore

/// The dispatcher's owner under real concurrency (the machine's own decisions are in
/// `StreamDispatchStateMachineTests`): frames are queued outside its lock, and still in the
/// order decided, and a detach is final when it returns. Over a real store, sessions that drain
/// in place.
@Suite(.timeLimit(.minutes(1)))
struct StreamDispatcherTests {
    let helpers = ReplayGapTests()

    func seqs(_ frames: ReplayGapTests.Frames) -> [String] {
        helpers.kinds(frames.texts.withLock { $0 })
    }

    @Test func aReplayRacingLiveDispatchDeliversEveryEventOnceAndInOrder() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let (store, dispatcher, channel) = try await helpers.setUp(directory)
        _ = try await store.append(stream: "s", events: (1...300).map { #"{"n":\#($0)}"# })
        dispatcher.dispatch(try await store.readEvents(stream: "s", after: 0, limit: 1000))
        let frames = ReplayGapTests.Frames()
        let subscription = LiveSubscription(id: "sub", session: helpers.session(frames), channel: channel, params: [])
        dispatcher.attach(subscription)
        // The commit thread goes on while the subscription replays the 300 it missed.
        async let committing: Void = {
            for n in 301...900 {
                let appended = try await store.append(stream: "s", events: [#"{"n":\#(n)}"#])
                dispatcher.dispatch(try await store.readEvents(stream: "s", after: appended.seqs[0] - 1, limit: 1))
            }
        }()
        try await dispatcher.replay(subscription, from: 0)
        try await committing
        #expect(seqs(frames) == (1...900).map { "notify \($0)" })
    }

    /// Raced a few times: without the wait in `detach`, a frame already decided could still be
    /// queued after it returned (and after the `unsubscribed` a caller sends next).
    @Test(arguments: 0..<4) func afterDetachReturnsTheSessionGetsNothingMoreForTheSubscription(round: Int) async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let (store, dispatcher, channel) = try await helpers.setUp(directory)
        let frames = ReplayGapTests.Frames()
        let subscription = LiveSubscription(id: "sub", session: helpers.session(frames), channel: channel, params: [])
        dispatcher.attach(subscription)
        try await dispatcher.replay(subscription, from: 0)  // live at 0
        for _ in 0..<20 { _ = try await store.append(stream: "s", events: (1...100).map { #"{"n":\#($0)}"# }) }
        let events = try await store.readEvents(stream: "s", after: 0, limit: 5000)
        // Another thread dispatches them a few at a time while this one detaches.
        let dispatching = Thread {
            for start in stride(from: 0, to: events.count, by: 5) { dispatcher.dispatch(Array(events[start..<min(start + 5, events.count)])) }
        }
        dispatching.start()
        try await waitUntil("some events were delivered") { !frames.texts.withLock { $0.isEmpty } }
        #expect(dispatcher.detach("sub") === subscription)
        let delivered = seqs(frames)
        try await waitUntil("every event was dispatched") { dispatcher.position == Int64(events.count) }
        #expect(seqs(frames) == delivered)
        #expect(delivered == (1...delivered.count).map { "notify \($0)" })
    }
}
