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
        count(sent)
    }

    /// Sends what repetitive subscriptions collected, for those whose period is due. Returns
    /// whether any repetitive subscription is attached.
    @discardableResult
    func flushRepetitive(nowMillis: Int64) -> Bool {
        step { m, actions in m.flushRepetitive(nowMillis: nowMillis, into: &actions) }
    }

    // MARK: Replay

    /// Most matching events a replay hands to the machine in one step; fewer when their frames
    /// reach an eighth of the session's bound on pending bytes (it checks for room before each
    /// step, so the outbox stays well inside the bound, as when it checked before each event).
    static let replayBatch = 64

    /// Joins live dispatch if the replay reached the tail; otherwise returns how far to replay.
    /// A subscription that starts beyond the tail joins when the tail gets there.
    func goLiveIfCaughtUp(_ subscription: LiveSubscription, replayedTo seq: Int64) -> Int64? {
        let next = read { m in m.goLiveIfCaughtUp(subscription.id, recipient: subscription, replayedTo: seq) }
        if case .replay(let target) = next { return target }
        return nil
    }

    /// Replays the subscription's matches after `startSeq` from the store, then makes it live.
    /// Runs in the caller's task, reading outside the lock, so replays never hold up live dispatch.
    func replay(_ subscription: LiveSubscription, from startSeq: Int64) async throws {
        var seq = startSeq
        var matched: [StoredEvent] = []
        var matchedBytes = 0
        let budget = max(1, subscription.session.maxOutboundBytes / 8)
        let overhead = subscription.framePrefix.utf8.count + 32
        while let target = goLiveIfCaughtUp(subscription, replayedTo: seq) {
            while seq < target {
                let limit = min(1000, Int(target - seq))
                let events = try await store.readEvents(stream: stream, after: seq, limit: limit)
                // Seqs have no gaps: events missing after `seq` were deleted (retention, or
                // `whenFull: dropOldest`) since the replay began. Never skipped silently.
                let next = events.first?.seq ?? target + 1
                if next > seq + 1 {
                    seq = min(next - 1, target)
                    let id = subscription.id
                    let stillOurs = step { m, actions in m.replayGap(id, recipient: subscription, at: seq, into: &actions) }
                    guard stillOurs else { return }
                }
                if events.isEmpty { break }
                let schema = self.schema
                var unreadable: [Int64] = []
                for event in events where event.seq <= target {
                    seq = event.seq
                    guard let record = Self.record(event, schema: schema) else {
                        unreadable.append(event.seq)
                        continue
                    }
                    guard subscription.matches(record, nowMillis: nowMillis()) else { continue }
                    matched.append(event)
                    matchedBytes += event.json.utf8.count + overhead
                    if matched.count >= Self.replayBatch || matchedBytes >= budget {
                        guard await deliverReplayed(subscription, &matched) else { return }
                        matchedBytes = 0
                    }
                }
                reportUnreadable(unreadable)
                guard await deliverReplayed(subscription, &matched) else { return }
                matchedBytes = 0
                if events.count < limit { seq = max(seq, target) }
            }
            seq = max(seq, target)
        }
    }

    /// Hands replayed matches to the machine (and empties `events`); false if the replay no
    /// longer belongs to an attachment.
    private func deliverReplayed(_ subscription: LiveSubscription, _ events: inout [StoredEvent]) async -> Bool {
        guard !events.isEmpty else { return true }
        // Back-pressure: a replay waits for the client to read instead of filling its outbox.
        if !subscription.session.hasRoom { await subscription.session.waitForRoom() }
        defer { events.removeAll(keepingCapacity: true) }
        return step { m, actions in m.deliverReplayed(subscription.id, recipient: subscription, events: events, into: &actions) }
    }

    // MARK: Tail

    /// Follows the store's change feed and dispatches what `dispatchCommitted` did not, until
    /// cancelled: other processes' events, and this process's when the tail was behind. Events
    /// still in the feed come from there, others from the store. The stream is read again only
    /// when the feed does not know its epoch or knows another one (it was recreated).
    func runTail() async {
        let changes = store.changes
        while !Task.isCancelled {
            let current = epoch
            await changes.wait(stream: stream, after: dispatched, epoch: current)
            if Task.isCancelled { return }
            do {
                if changes.epoch(of: stream) != current {
                    guard let info = try await store.stream(named: stream) else { return }
                    if info.epoch != current {
                        reset(to: info)
                        continue
                    }
                }
                var from = position
                while true {
                    let events: [StoredEvent]
                    if let recent = changes.recentEvents(stream: stream, epoch: current, after: from, limit: 1000) {
                        events = recent
                    } else {
                        events = try await store.readEvents(stream: stream, after: from, limit: 1000)
                    }
                    guard let last = events.last else { break }
                    dispatch(events)
                    // Up to 1000 events matched: let the event loop this may run on serve its connections.
                    await Task.yield()
                    from = max(last.seq, position)
                    if from >= changes.lastSeq(of: stream) && events.count < 1000 { break }
                }
            } catch {
                logger.error("tail of stream failed; retrying", metadata: ["stream": "\(stream)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}
