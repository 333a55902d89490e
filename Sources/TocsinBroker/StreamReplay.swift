import TocsinCore
import TocsinStore

/// One subscription's replay: reads its stream from the store after where it starts, outside
/// every lock, hands the matches to the dispatcher's machine in batches (waiting for room in
/// the session's outbox first), and stops where the machine says it has caught up with live
/// dispatch — in the same step that makes it live, so nothing falls between the two.
struct StreamReplay {
    let dispatcher: StreamDispatcher
    let subscription: LiveSubscription

    /// Most matching events a replay hands to the machine in one step; fewer when their frames
    /// reach an eighth of the session's bound on pending bytes (it checks for room before each
    /// step, so the outbox stays well inside the bound, as when it checked before each event).
    static let batch = 64

    /// Replays the subscription's matches after `startSeq` from the store, then makes it live.
    /// Runs in the caller's task, reading outside the lock, so replays never hold up live dispatch.
    func run(from startSeq: Int64) async throws {
        var seq = startSeq
        var matched: [StoredEvent] = []
        /// What the channel's `enrich` clauses attach to each match, at the tables' current versions.
        var enriched: [String?] = []
        let enricher = subscription.channel.enrichments.isEmpty ? nil : dispatcher.enricher
        var matchedBytes = 0
        let budget = max(1, subscription.session.maxOutboundBytes / 8)
        let overhead = subscription.framePrefix.utf8.count + 32
        var retry = StoreRetry("a subscription's replay")
        while let target = dispatcher.goLiveIfCaughtUp(subscription, replayedTo: seq) {
            while seq < target {
                let limit = min(1000, Int(target - seq))
                guard let events = try await read(after: seq, limit: limit, retry: &retry) else { return }
                // Seqs have no gaps: events missing after `seq` were deleted (retention, or
                // `whenFull: dropOldest`) since the replay began. Never skipped silently.
                let next = events.first?.seq ?? target + 1
                if next > seq + 1 {
                    seq = min(next - 1, target)
                    let id = subscription.id
                    let stillOurs = dispatcher.step { m, actions in m.replayGap(id, recipient: subscription, at: seq, into: &actions) }
                    guard stillOurs else { return }
                }
                if events.isEmpty { break }
                let schema = dispatcher.schema
                // The params now (a bound subscription may have moved since it was attached).
                let params = dispatcher.read { $0.params(of: subscription.id) } ?? subscription.params
                var unreadable: [Int64] = []
                for event in events where event.seq <= target {
                    seq = event.seq
                    guard let record = StreamDispatch.record(event, schema: schema) else {
                        unreadable.append(event.seq)
                        continue
                    }
                    let now = dispatcher.nowMillis()
                    guard subscription.channel.predicate.evaluate(record, params, now) else { continue }
                    matched.append(event)
                    matchedBytes += event.json.utf8.count + overhead
                    if let enricher {
                        let x = enricher.json(subscription.channel, record: record, params: params, nowMillis: now)
                        enriched.append(x)
                        matchedBytes += x?.utf8.count ?? 0
                    }
                    if matched.count >= Self.batch || matchedBytes >= budget {
                        guard await deliver(&matched, &enriched) else { return }
                        matchedBytes = 0
                    }
                }
                dispatcher.reportUnreadable(unreadable)
                guard await deliver(&matched, &enriched) else { return }
                matchedBytes = 0
                if events.count < limit { seq = max(seq, target) }
            }
            seq = max(seq, target)
        }
    }

    /// Events after `seq`, waiting out an outage of the store (a replay that started just before
    /// it, or a client that resumed during it, goes on when the store is back); nil once the
    /// replay no longer belongs to an attachment (the client left meanwhile). Other errors throw.
    private func read(after seq: Int64, limit: Int, retry: inout StoreRetry) async throws -> [StoredEvent]? {
        while true {
            do {
                let events = try await dispatcher.store.readEvents(stream: dispatcher.stream, after: seq, limit: limit)
                retry.succeeded(logger: subscription.session.logger, metadata: ["subscription": "\(subscription.id)"])
                return events
            } catch where StoreRetry.isOutage(error) && !Task.isCancelled {
                await retry.failed(error, logger: subscription.session.logger, metadata: ["subscription": "\(subscription.id)"])
                guard dispatcher.isReplaying(subscription) else { return nil }
            }
        }
    }

    /// Hands replayed matches to the machine (and empties `events`); false if the replay no
    /// longer belongs to an attachment.
    private func deliver(_ events: inout [StoredEvent], _ enriched: inout [String?]) async -> Bool {
        guard !events.isEmpty else { return true }
        // Back-pressure: a replay waits for the client to read instead of filling its outbox.
        if !subscription.session.hasRoom { await subscription.session.waitForRoom() }
        defer {
            events.removeAll(keepingCapacity: true)
            enriched.removeAll(keepingCapacity: true)
        }
        return dispatcher.step { m, actions in
            m.deliverReplayed(subscription.id, recipient: subscription, events: events, enriched: enriched, into: &actions)
        }
    }
}
