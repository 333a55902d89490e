import TocsinCore
import TocsinStore

/// The four ways events reach the machine: live dispatch (the commit thread and the tail),
/// replays, the repetitive ticker and the tail loop itself.
extension StreamDispatcher {
    // MARK: Live dispatch

    /// Most events dispatched in one step of the machine: the longest a big batch makes the
    /// dispatcher's other users (a subscribe, an unsubscribe, a closing connection, on an event
    /// loop) wait. Between chunks they get their turn; dispatch skips what is at or before the
    /// position, so nothing is sent twice or out of order whoever dispatches the next chunk.
    static let eventsPerLock = 256

    /// Matches committed events (in seq order; those at or before the position are skipped)
    /// and queues notifications; returns how many it decided (repetitive matches count when
    /// flushed). The tail's way in.
    @discardableResult
    func dispatch(_ events: [StoredEvent]) -> Int {
        var sent = 0
        for start in stride(from: 0, to: events.count, by: Self.eventsPerLock) {
            let chunk = events[start..<min(start + Self.eventsPerLock, events.count)]
            sent += step { m, actions in
                defer { dispatched.advance(to: m.position) }
                return m.dispatch(chunk, nowMillis: nowMillis(), into: &actions)
            }
        }
        if sent > 0 { recordLatency(events) }
        return count(sent)
    }

    /// The change feed's consumer: events this process has just committed, on the committing
    /// thread. They are dispatched here when they follow on from the position in the same
    /// epoch; otherwise (the tail is behind, or the stream was recreated) the tail will.
    func dispatchCommitted(epoch: String, events: [StoredEvent]) {
        var sent = 0
        for start in stride(from: 0, to: events.count, by: Self.eventsPerLock) {
            let chunk = events[start..<min(start + Self.eventsPerLock, events.count)]
            let go = step { m, actions -> Bool in
                guard m.follows(epoch: epoch, first: start == 0 ? chunk.first?.seq : nil) else { return false }
                // Taken from here on: a poller that sees this commit meanwhile does not wake the tail.
                if start == 0 { dispatched.advance(to: events[events.count - 1].seq) }
                sent += m.dispatch(chunk, nowMillis: nowMillis(), into: &actions)
                dispatched.advance(to: m.position)
                return true
            }
            if !go { break }
        }
        if sent > 0 { recordLatency(events) }
        count(sent)
    }


    /// Sends what repetitive subscriptions collected, for those whose period is due. Returns
    /// whether any repetitive subscription is attached.
    @discardableResult
    func flushRepetitive(nowMillis: Int64) -> Bool {
        step { m, actions in m.flushRepetitive(nowMillis: nowMillis, into: &actions) }
    }

    // MARK: Replay

    /// Joins live dispatch if the replay reached the tail; otherwise returns how far to replay.
    /// A subscription that starts beyond the tail joins when the tail gets there.
    func goLiveIfCaughtUp(_ subscription: LiveSubscription, replayedTo seq: Int64) -> Int64? {
        let next = read { m in m.goLiveIfCaughtUp(subscription.id, recipient: subscription, replayedTo: seq) }
        if case .replay(let target) = next { return target }
        return nil
    }

    /// Whether `subscription`'s replay still belongs to its attachment (not detached or replaced).
    func isReplaying(_ subscription: LiveSubscription) -> Bool {
        read { m in m.isReplaying(subscription.id, recipient: subscription) }
    }

    /// Replays the subscription's matches after `startSeq` from the store, then makes it live
    /// (`StreamReplay`).
    func replay(_ subscription: LiveSubscription, from startSeq: Int64) async throws {
        try await StreamReplay(dispatcher: self, subscription: subscription).run(from: startSeq)
    }

    // MARK: Tail

    /// Follows the store's change feed until cancelled (`StreamTail`).
    func runTail() async {
        await StreamTail(dispatcher: self).run()
    }
}
