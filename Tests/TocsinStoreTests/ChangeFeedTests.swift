import Synchronization
import Testing
import TocsinCore
import TocsinStore

/// The change feed on its own: which waiters wake, and which events it hands out instead of the store.
@Suite(.timeLimit(.minutes(1)))
struct ChangeFeedTests {
    static func events(_ seqs: ClosedRange<Int64>) -> [StoredEvent] {
        seqs.map { StoredEvent(seq: $0, publishedAtMillis: 0, json: #"{"n":\#($0)}"#) }
    }

    @Test func keepsConsecutiveEventsOfItsEpoch() {
        let feed = ChangeFeed()
        feed.appended(stream: "s", epoch: "e1", events: Self.events(1...3))
        feed.appended(stream: "s", epoch: "e1", events: Self.events(4...5))
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 0, limit: 100)?.map(\.seq) == [1, 2, 3, 4, 5])
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 2, limit: 2)?.map(\.seq) == [3, 4])
        // Nothing after the newest, another epoch, another stream: the caller reads the store.
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 5, limit: 100) == nil)
        #expect(feed.recentEvents(stream: "s", epoch: "e0", after: 0, limit: 100) == nil)
        #expect(feed.recentEvents(stream: "t", epoch: "e1", after: 0, limit: 100) == nil)
        #expect(feed.lastSeq(of: "s") == 5)
        #expect(feed.epoch(of: "s") == "e1")
    }

    @Test func aGapLeftByAnotherProcessIsNeverPapered() {
        let feed = ChangeFeed()
        feed.appended(stream: "s", epoch: "e1", events: Self.events(1...3))
        // Seqs 4...6 were appended by another process (seen by the poller), then 7...8 here.
        feed.advance(stream: "s", epoch: "e1", to: 6)
        feed.appended(stream: "s", epoch: "e1", events: Self.events(7...8))
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 3, limit: 100) == nil)
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 0, limit: 100) == nil)
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 6, limit: 100)?.map(\.seq) == [7, 8])
        #expect(feed.lastSeq(of: "s") == 8)
    }

    @Test func keepsOnlyTheNewestEvents() {
        let feed = ChangeFeed()
        let total = Int64(3 * ChangeFeed.recentCapacity)
        for start in stride(from: Int64(1), through: total, by: 100) {
            feed.appended(stream: "s", epoch: "e1", events: Self.events(start...min(total, start + 99)))
        }
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 0, limit: 10) == nil)
        let newest = feed.recentEvents(stream: "s", epoch: "e1", after: total - Int64(ChangeFeed.recentCapacity), limit: .max)
        #expect(newest?.map(\.seq) == Array((total - Int64(ChangeFeed.recentCapacity) + 1)...total))
    }

    @Test func aNewEpochDropsTheOldEventsAndWakesWaitersOfTheOld() async {
        let feed = ChangeFeed()
        feed.appended(stream: "s", epoch: "e1", events: Self.events(1...10))
        // A waiter at seq 10 of e1 wakes when the stream is recreated, though seq went down.
        async let woke: Void = feed.wait(stream: "s", after: 10, epoch: "e1")
        feed.advance(stream: "s", epoch: "e2", to: 0)
        await woke
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 0, limit: 100) == nil)
        #expect(feed.epoch(of: "s") == "e2")
        #expect(feed.lastSeq(of: "s") == 0)
        feed.appended(stream: "s", epoch: "e2", events: Self.events(1...2))
        #expect(feed.recentEvents(stream: "s", epoch: "e2", after: 0, limit: 100)?.map(\.seq) == [1, 2])
    }

    @Test func aWaiterSleepsUntilItsStreamMovesPastIt() async {
        let feed = ChangeFeed()
        feed.appended(stream: "s", epoch: "e1", events: Self.events(1...5))
        let woken = AsyncStream<Int64>.makeStream()
        let waiter = Task {
            await feed.wait(stream: "s", after: 5, epoch: "e1")
            woken.continuation.yield(feed.lastSeq(of: "s"))
        }
        // Another stream, and the same epoch re-announced at the same seq, wake nobody.
        feed.appended(stream: "t", epoch: "x", events: Self.events(1...9))
        feed.advance(stream: "s", epoch: "e1", to: 5)
        feed.appended(stream: "s", epoch: "e1", events: Self.events(6...6))
        var iterator = woken.stream.makeAsyncIterator()
        #expect(await iterator.next() == 6)
        await waiter.value
    }

    /// The broker's dispatcher consumes its own commits and moves its cursor; the tail waits on
    /// that cursor, so it sleeps through commits already dispatched and wakes for the rest.
    @Test func aConsumerTakesCommitsBeforeWaitersOnItsCursorLook() async {
        let feed = ChangeFeed()
        let cursor = ChangeFeed.Cursor(0)
        let consumed = Mutex<[Int64]>([])
        feed.consume(stream: "s") { epoch, events in
            // As the dispatcher does: only events that follow on from the cursor, in its epoch.
            guard epoch == "e1", events[0].seq == cursor.value + 1 else { return }
            consumed.withLock { $0 += events.map(\.seq) }
            cursor.set(events.last!.seq)
        }
        let woken = AsyncStream<Int64>.makeStream()
        let waiter = Task {
            await feed.wait(stream: "s", after: cursor, epoch: "e1")
            woken.continuation.yield(feed.lastSeq(of: "s"))
        }
        feed.appended(stream: "s", epoch: "e1", events: Self.events(1...3))
        feed.appended(stream: "s", epoch: "e1", events: Self.events(4...4))
        // The consumer is told before the feed records: the events are still kept for readers.
        #expect(consumed.withLock { $0 } == [1, 2, 3, 4])
        #expect(feed.recentEvents(stream: "s", epoch: "e1", after: 0, limit: 100)?.map(\.seq) == [1, 2, 3, 4])
        // Another process appended 5...6: nobody consumed those, so the waiter wakes.
        feed.advance(stream: "s", epoch: "e1", to: 6)
        var iterator = woken.stream.makeAsyncIterator()
        #expect(await iterator.next() == 6)
        await waiter.value
        // After that gap the consumer leaves events to the tail.
        feed.appended(stream: "s", epoch: "e1", events: Self.events(7...8))
        #expect(consumed.withLock { $0 } == [1, 2, 3, 4])
        // A waiter on a cursor already behind the stream returns at once.
        await feed.wait(stream: "s", after: cursor, epoch: "e1")
    }

    /// A commit of a new epoch (the stream was recreated) heard before the recreate itself: the
    /// old epoch's seqs must not linger, or a waiter of the new epoch would never sleep.
    @Test func aCommitInANewEpochStartsItsSeqsOver() async {
        let feed = ChangeFeed()
        feed.appended(stream: "s", epoch: "e1", events: Self.events(1...100))
        feed.appended(stream: "s", epoch: "e2", events: Self.events(1...1))
        #expect(feed.epoch(of: "s") == "e2")
        #expect(feed.lastSeq(of: "s") == 1)
        feed.advance(stream: "s", epoch: "e2", to: 0)
        #expect(feed.lastSeq(of: "s") == 1)
        // A waiter of e2 at seq 1 sleeps until seq 2 arrives.
        let woken = AsyncStream<Int64>.makeStream()
        let waiter = Task {
            await feed.wait(stream: "s", after: 1, epoch: "e2")
            woken.continuation.yield(feed.lastSeq(of: "s"))
        }
        feed.appended(stream: "s", epoch: "e2", events: Self.events(2...2))
        var iterator = woken.stream.makeAsyncIterator()
        #expect(await iterator.next() == 2)
        await waiter.value
    }

    /// Every listener hears that definitions changed, each time; a listener that is gone is forgotten.
    @Test func definitionChangesReachEveryListener() async {
        let feed = ChangeFeed()
        feed.definitionsChanged()  // before anyone listens: nobody hears it
        var first = feed.definitionChanges().makeAsyncIterator()
        var second = feed.definitionChanges().makeAsyncIterator()
        do {
            _ = feed.definitionChanges()  // dropped at once
        }
        feed.definitionsChanged()
        feed.definitionsChanged()
        #expect(await first.next() != nil)
        #expect(await second.next() != nil)
        // And hears the next change.
        let next = Task {
            var iterator = first
            return await iterator.next() != nil
        }
        feed.definitionsChanged()
        #expect(await next.value)
    }
}
