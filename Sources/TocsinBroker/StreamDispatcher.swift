import Logging
import Synchronization
import TocsinCore
import TocsinStore

/// Matches one stream's events against the subscriptions attached on this broker and queues
/// notifications, in seq order per subscription.
///
/// Events this process commits are dispatched right after their commit, on the committing
/// thread (`dispatchCommitted`, the store's change-feed consumer), when they follow on from
/// what was dispatched. Everything else — other processes' events, a recreated stream, events
/// after a gap — the tail loop (`runTail`) reads and dispatches. A subscription that starts
/// behind the tail first replays from the store (`replay`); it joins live dispatch inside
/// `goLiveIfCaughtUp`, a step under the same lock as every dispatch, so nothing falls between
/// replay and live delivery.
///
/// All state is behind one lock; no method holds it while waiting for anything. Sessions'
/// locks (queueing a frame) and the catalog's are taken inside it, never the other way round.
final class StreamDispatcher: Sendable {
    let stream: String
    private let store: any Store
    private let logger: Logger
    private let catalog: Catalog
    private let metrics: BrokerMetrics
    /// The last seq dispatched, for the change feed: the tail waits for the stream to move
    /// beyond it, so events dispatched at their commit do not wake the tail.
    private let dispatched: ChangeFeed.Cursor
    private let state: Mutex<State>
    /// The clock of time-relative channel conditions (`now()`), whichever path dispatches.
    private let nowMillis: @Sendable () -> Int64

    fileprivate struct ChannelState {
        var index: ChannelIndex
        /// Live subscriptions per interest.
        var subscribers: [InterestID: [LiveSubscription]] = [:]
    }

    fileprivate struct Attached {
        var subscription: LiveSubscription
        var interest: InterestID?
        /// Repetitive channels: matches collected since the last flush (push delivery), at most
        /// `maxBatchEvents` and about `maxBatchBytes` of event JSON. Mutated in place (never
        /// through a copy of the `Attached`), so an append is O(1).
        var pending: [EventPayload] = []
        var pendingBytes = 0
        var pendingCount = 0
        var pendingSeq: Int64 = 0
        var nextFlushMillis: Int64 = 0
    }

    fileprivate struct State {
        let stream: String
        var epoch: String
        /// The last seq dispatched.
        var position: Int64
        var schema: StreamSchema
        var channels: [String: ChannelState] = [:]
        var attached: [String: Attached] = [:]
        /// Ids of attached subscriptions on repetitive channels (the ticker visits only these).
        var repetitive: Set<String> = []
        /// Subscriptions that start beyond the tail (it lags the store): they go live once the tail reaches their seq.
        var waitingForTail: [String: Int64] = [:]
        var matched: [InterestID] = []
        /// Seqs of stored events that did not read back against the schema in the last dispatch,
        /// for the caller to report outside the lock.
        var unreadable: [Int64] = []
    }

    /// A repetitive channel's batch (push delivery) that reaches this many events, or
    /// `maxBatchBytes` of event JSON, is sent at once instead of at the end of the period:
    /// memory per subscription stays bounded, and nothing is lost.
    static let maxBatchEvents = 1000
    static let maxBatchBytes = 1 << 20
    private let unreadableLog = Mutex(LogThrottle())

    init(
        info: StreamInfo, store: any Store, catalog: Catalog, metrics: BrokerMetrics, logger: Logger,
        nowMillis: @escaping @Sendable () -> Int64 = WallClock.nowMillis
    ) {
        self.stream = info.name
        self.nowMillis = nowMillis
        self.state = Mutex(State(stream: info.name, epoch: info.epoch, position: info.lastSeq, schema: info.definition.schema))
        self.dispatched = ChangeFeed.Cursor(info.lastSeq)
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.logger = logger
    }

    var epoch: String { state.withLock { $0.epoch } }
    /// The last seq dispatched.
    var position: Int64 { state.withLock { $0.position } }

    /// Runs `body` under the lock, then wakes the event loops of the sessions it queued frames for.
    private func locked<T: Sendable>(_ body: (inout State, inout WakeBatch) -> T) -> T {
        let (result, wakes) = state.withLock { s in
            var wakes = WakeBatch()
            let result = body(&s, &wakes)
            return (result, wakes)
        }
        wakes.run()
        return result
    }

    // MARK: Attaching

    /// Where a subscription will start, resolved against the stream's current state.
    struct Start: Sendable {
        var seq: Int64
        var recovered: Bool
    }

    static func resolve(_ from: StartPosition, acked: StreamPosition?, info: StreamInfo) -> Start {
        let oldest = info.firstSeq - 1
        func at(_ p: StreamPosition) -> Start {
            guard p.epoch == info.epoch else { return Start(seq: oldest, recovered: false) }
            if p.seq < oldest { return Start(seq: oldest, recovered: false) }
            return Start(seq: min(p.seq, info.lastSeq), recovered: true)
        }
        switch from {
        case .latest: return acked.map(at) ?? Start(seq: info.lastSeq, recovered: true)
        case .earliest: return Start(seq: oldest, recovered: true)
        case .position(let p): return at(p)
        }
    }

    /// Registers a subscription that will start after `startSeq`. It receives nothing until
    /// `replay` runs (after the caller has queued its reply frame). An earlier attachment of
    /// the same subscription (the client reconnected) is replaced and returned.
    @discardableResult
    func attach(_ subscription: LiveSubscription) -> LiveSubscription? {
        state.withLock { s in
            let replaced = s.detach(subscription.id, session: nil)
            s.attached[subscription.id] = Attached(subscription: subscription)
            if subscription.isRepetitive { s.repetitive.insert(subscription.id) }
            return replaced
        }
    }

    /// Stops delivering to a subscription, if `session` (when given) is the one it is attached
    /// to. Returns the subscription it detached.
    @discardableResult
    func detach(_ id: String, session: Session? = nil) -> LiveSubscription? {
        state.withLock { s in s.detach(id, session: session) }
    }

    /// Detaches every subscription of a channel (the channel was deleted) and returns them.
    func detachAll(channel: String) -> [LiveSubscription] {
        state.withLock { s in
            s.attached.values.filter { $0.subscription.channel.name == channel }.compactMap { s.detach($0.subscription.id, session: nil) }
        }
    }

    /// Joins live dispatch if the replay reached the tail; otherwise returns how far to replay.
    /// A subscription that starts beyond the tail joins when the tail gets there.
    func goLiveIfCaughtUp(_ subscription: LiveSubscription, replayedTo seq: Int64) -> Int64? {
        state.withLock { s in
            guard var a = s.attached[subscription.id], a.subscription === subscription else { return nil }
            if seq < s.position { return s.position }
            if seq > s.position {
                s.waitingForTail[subscription.id] = seq
                return nil
            }
            s.makeLive(&a)
            s.attached[subscription.id] = a
            return nil
        }
    }

    /// Replays the subscription's matches after `startSeq` from the store, then makes it live.
    /// Runs in the caller's task, reading outside the lock, so replays never hold up live dispatch.
    func replay(_ subscription: LiveSubscription, from startSeq: Int64) async throws {
        var seq = startSeq
        while let target = goLiveIfCaughtUp(subscription, replayedTo: seq) {
            while seq < target {
                let limit = min(1000, Int(target - seq))
                let events = try await store.readEvents(stream: stream, after: seq, limit: limit)
                // Seqs have no gaps: events missing after `seq` were deleted (retention, or
                // `whenFull: dropOldest`) since the replay began. Never skipped silently.
                let next = events.first?.seq ?? target + 1
                if next > seq + 1 {
                    seq = min(next - 1, target)
                    guard tellGap(subscription, at: seq) else { return }
                }
                if events.isEmpty { break }
                let schema = state.withLock { $0.schema }
                for event in events where event.seq <= target {
                    guard let record = Self.record(event, schema: schema) else {
                        reportUnreadable([event.seq])
                        seq = event.seq
                        continue
                    }
                    if subscription.matches(record, nowMillis: nowMillis()) {
                        // Back-pressure: a replay waits for the client to read instead of filling its outbox.
                        if !subscription.session.hasRoom { await subscription.session.waitForRoom() }
                        guard deliverReplayed(subscription, event: event) else { return }
                    }
                    seq = event.seq
                }
                if events.count < limit { seq = max(seq, target) }
            }
            seq = max(seq, target)
        }
    }

    /// Tells a replaying subscription that events before `seq` are gone; false if it was detached.
    private func tellGap(_ subscription: LiveSubscription, at seq: Int64) -> Bool {
        locked { s, wakes in
            guard let a = s.attached[subscription.id], a.subscription === subscription else { return false }
            subscription.session.send(subscription.notRecovered(stream: stream, position: StreamPosition(epoch: s.epoch, seq: seq)), wakes: &wakes)
            return true
        }
    }

    private func deliverReplayed(_ subscription: LiveSubscription, event: StoredEvent) -> Bool {
        locked { s, wakes in
            guard s.attached[subscription.id]?.subscription === subscription else { return false }
            State.deliver(&s.attached[subscription.id]!, event: event, wakes: &wakes)
            return true
        }
    }

    // MARK: Live dispatch

    /// Most events dispatched under one hold of the lock: the longest a big batch makes the
    /// dispatcher's other users (a subscribe, an unsubscribe, a closing connection, on an event
    /// loop) wait. Between chunks they get their turn; dispatch skips what is at or before the
    /// position, so nothing is sent twice or out of order whoever dispatches the next chunk.
    static let eventsPerLock = 256

    /// Matches committed events (in seq order; those at or before the position are skipped)
    /// and queues notifications; returns how many it queued (repetitive matches count when
    /// flushed). The tail's way in.
    @discardableResult
    func dispatch(_ events: [StoredEvent]) -> Int {
        var sent = 0
        for start in stride(from: 0, to: events.count, by: Self.eventsPerLock) {
            let chunk = events[start..<min(start + Self.eventsPerLock, events.count)]
            var unreadable: [Int64] = []
            sent += locked { s, wakes in
                defer { unreadable = s.takeUnreadable() }
                return s.dispatch(chunk, nowMillis: nowMillis(), wakes: &wakes, dispatched: dispatched)
            }
            reportUnreadable(unreadable)
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
            var unreadable: [Int64] = []
            let go = locked { s, wakes -> Bool in
                defer { unreadable = s.takeUnreadable() }
                guard s.epoch == epoch else { return false }
                if start == 0 {
                    guard let first = chunk.first, first.seq == s.position + 1 else { return false }
                    // Taken from here on: a poller that sees this commit meanwhile does not wake the tail.
                    dispatched.advance(to: events[events.count - 1].seq)
                }
                sent += s.dispatch(chunk, nowMillis: nowMillis(), wakes: &wakes, dispatched: dispatched)
                return true
            }
            reportUnreadable(unreadable)
            if !go { break }
        }
        count(sent)
    }

    /// Stored events that no longer read back against the stream's schema (stored before a
    /// rule tightened, or damaged) cannot be matched: never skipped silently. Each is counted
    /// (`tocsin_unreadable_events_total`) and logged, at most once a minute per stream.
    private func reportUnreadable(_ seqs: [Int64]) {
        guard let first = seqs.first else { return }
        metrics.unreadableEvents.increment(by: Int64(seqs.count))
        guard let count = unreadableLog.withLock({ $0.occurred() }) else { return }
        logger.error(
            "stored events do not read back against the stream's schema; they cannot be matched or delivered",
            metadata: ["stream": "\(stream)", "seq": "\(first)", "occurrences": "\(count + seqs.count - 1)"])
    }

    @discardableResult
    private func count(_ sent: Int) -> Int {
        if sent > 0 {
            metrics.deliveredNotifications.increment(by: Int64(sent))
            metrics.totals.delivered.add(sent, ordering: .relaxed)
        }
        return sent
    }

    /// Sends what repetitive subscriptions collected, for those whose period is due. Returns
    /// whether any repetitive subscription is attached.
    @discardableResult
    func flushRepetitive(nowMillis: Int64) -> Bool {
        locked { s, wakes in
            for id in s.repetitive where s.attached[id] != nil {
                State.flushIfDue(&s.attached[id]!, nowMillis: nowMillis, wakes: &wakes)
            }
            return !s.repetitive.isEmpty
        }
    }

    /// The stream was recreated: its epoch starts over at seq 0. Every attached subscription is
    /// recompiled against the new schema, told with a `subscribed` frame (no id, recovered
    /// false, seq 0), and stays live, so it gets the new epoch from its first event.
    /// One whose channel no longer compiles or binds is detached with an `unsubscribed` frame.
    func reset(to info: StreamInfo) {
        locked { s, wakes in
            s.epoch = info.epoch
            s.schema = info.definition.schema
            s.position = 0
            dispatched.set(0)
            s.channels = [:]
            s.waitingForTail = [:]
            let previous = s.attached
            s.attached = [:]
            s.repetitive = []
            for old in previous.values.map(\.subscription) {
                guard let definition = catalog.channel(old.channel.name)?.definition,
                    let channel = try? ChannelCompiler.compile(definition, schema: info.definition.schema),
                    old.params.count == definition.params.count
                else {
                    _ = old.session.removeSubscription(old.id)
                    old.session.send(.unsubscribed(id: nil, subscription: old.id), wakes: &wakes)
                    continue
                }
                let renewed = LiveSubscription(id: old.id, session: old.session, channel: channel, params: old.params)
                var a = Attached(subscription: renewed)
                s.makeLive(&a)
                s.attached[renewed.id] = a
                if renewed.isRepetitive { s.repetitive.insert(renewed.id) }
                renewed.session.send(renewed.notRecovered(stream: stream, position: StreamPosition(epoch: info.epoch, seq: 0)), wakes: &wakes)
            }
        }
    }

    func updateSchema(_ info: StreamInfo) {
        state.withLock { s in
            if info.epoch == s.epoch { s.schema = info.definition.schema }
        }
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

    static func record(_ event: StoredEvent, schema: StreamSchema) -> Record? {
        try? schema.record(from: JSONValue.parse(event.json))
    }
}

extension StreamDispatcher.State {
    mutating func detach(_ id: String, session: Session?) -> LiveSubscription? {
        guard let a = attached[id] else { return nil }
        if let session, a.subscription.session !== session { return nil }
        attached.removeValue(forKey: id)
        waitingForTail.removeValue(forKey: id)
        repetitive.remove(id)
        let name = a.subscription.channel.name
        guard let interest = a.interest, channels[name] != nil else { return a.subscription }
        // Mutated in place (through the dictionary's accessor): a copy of the channel's state
        // would copy its whole index and subscriber table on write, once per subscription.
        channels[name]!.subscribers[interest]?.removeAll { $0 === a.subscription }
        if channels[name]!.subscribers[interest]?.isEmpty == true { channels[name]!.subscribers.removeValue(forKey: interest) }
        channels[name]!.index.release(interest)
        if channels[name]!.index.count == 0 { channels.removeValue(forKey: name) }
        return a.subscription
    }

    mutating func makeLive(_ a: inout StreamDispatcher.Attached) {
        guard a.interest == nil else { return }
        let subscription = a.subscription
        let channel = subscription.channel
        if channels[channel.name] == nil { channels[channel.name] = StreamDispatcher.ChannelState(index: ChannelIndex(channel: channel)) }
        // In place, as in `detach`.
        let interest = channels[channel.name]!.index.acquire(params: subscription.params)
        channels[channel.name]!.subscribers[interest, default: []].append(subscription)
        a.interest = interest
    }

    /// The tail found events before `seq` gone (deleted before it read them): every live
    /// subscription may have missed some, and is told so.
    mutating func tellGap(before seq: Int64, wakes: inout WakeBatch) {
        for a in attached.values where a.interest != nil {
            a.subscription.session.send(
                a.subscription.notRecovered(stream: stream, position: StreamPosition(epoch: epoch, seq: seq - 1)), wakes: &wakes)
        }
    }

    /// Makes live the waiting subscriptions the tail has now reached.
    mutating func releaseWaiting() {
        for (id, seq) in waitingForTail where seq <= position {
            waitingForTail.removeValue(forKey: id)
            guard var a = attached[id] else { continue }
            makeLive(&a)
            attached[id] = a
        }
    }

    mutating func dispatch(_ events: ArraySlice<StoredEvent>, nowMillis: Int64, wakes: inout WakeBatch, dispatched: ChangeFeed.Cursor) -> Int {
        var sent = 0
        defer { dispatched.advance(to: position) }
        for event in events where event.seq > position {
            if event.seq > position + 1 { tellGap(before: event.seq, wakes: &wakes) }
            if !waitingForTail.isEmpty { releaseWaiting() }
            position = event.seq
            guard !channels.isEmpty else { continue }
            guard let record = StreamDispatcher.record(event, schema: schema) else {
                unreadable.append(event.seq)
                continue
            }
            var pushSuffix: String? = nil
            for state in channels.values {
                matched.removeAll(keepingCapacity: true)
                state.index.match(record, nowMillis: nowMillis, into: &matched)
                for interest in matched {
                    for subscription in state.subscribers[interest] ?? [] {
                        if subscription.isRepetitive || subscription.channel.definition.delivery == .notify {
                            guard attached[subscription.id] != nil else { continue }
                            if Self.deliver(&attached[subscription.id]!, event: event, wakes: &wakes) { sent += 1 }
                        } else {
                            if pushSuffix == nil { pushSuffix = NotifyFrame.suffix(seq: event.seq, .event(event.json)) }
                            if subscription.session.send(.notify(prefix: subscription.framePrefix, suffix: pushSuffix!), wakes: &wakes) {
                                sent += 1
                            }
                        }
                    }
                }
            }
        }
        if !waitingForTail.isEmpty { releaseWaiting() }
        return sent
    }

    /// Sends (or, for repetitive channels, collects) one matching event; true if a frame was queued.
    @discardableResult
    static func deliver(_ a: inout StreamDispatcher.Attached, event: StoredEvent, wakes: inout WakeBatch) -> Bool {
        let subscription = a.subscription
        switch (subscription.channel.definition.mode, subscription.channel.definition.delivery) {
        case (.continuous, .push):
            let suffix = NotifyFrame.suffix(seq: event.seq, .event(event.json))
            return subscription.session.send(.notify(prefix: subscription.framePrefix, suffix: suffix), wakes: &wakes)
        case (.continuous, .notify):
            let suffix = NotifyFrame.suffix(seq: event.seq, .count(1))
            return subscription.session.send(.notify(prefix: subscription.framePrefix, suffix: suffix), wakes: &wakes)
        case (.repetitive, let delivery):
            a.pendingCount += 1
            a.pendingSeq = event.seq
            guard delivery == .push else { return false }
            a.pending.append(EventPayload(seq: event.seq, json: event.json))
            a.pendingBytes += event.json.utf8.count
            guard a.pending.count >= StreamDispatcher.maxBatchEvents || a.pendingBytes >= StreamDispatcher.maxBatchBytes else { return false }
            return sendPending(&a, wakes: &wakes)
        }
    }

    /// Sends the batch of a repetitive subscription if its period is due.
    static func flushIfDue(_ a: inout StreamDispatcher.Attached, nowMillis: Int64, wakes: inout WakeBatch) {
        guard case .repetitive(let period) = a.subscription.channel.definition.mode else { return }
        // The period is bounded (`ChannelMode.maxPeriodMillis`); a clock at the end of time
        // still must not trap.
        let (next, overflow) = nowMillis.addingReportingOverflow(period)
        let nextFlush = overflow ? Int64.max : next
        if a.nextFlushMillis == 0 { a.nextFlushMillis = nextFlush }
        guard nowMillis >= a.nextFlushMillis else { return }
        a.nextFlushMillis = nextFlush
        sendPending(&a, wakes: &wakes)
    }

    /// Sends what a repetitive subscription collected, if anything; true if a frame was queued.
    @discardableResult
    static func sendPending(_ a: inout StreamDispatcher.Attached, wakes: inout WakeBatch) -> Bool {
        guard a.pendingCount > 0 else { return false }
        let subscription = a.subscription
        let n: ServerMessage.Notification = subscription.channel.definition.delivery == .push ? .events(a.pending) : .count(a.pendingCount)
        // Fresh storage, not `removeAll(keepingCapacity:)`: the frame's text is built, the array is not kept.
        a.pending = []
        a.pendingBytes = 0
        a.pendingCount = 0
        return subscription.session.send(.notify(prefix: subscription.framePrefix, suffix: NotifyFrame.suffix(seq: a.pendingSeq, n)), wakes: &wakes)
    }

    mutating func takeUnreadable() -> [Int64] {
        defer { unreadable = [] }
        return unreadable
    }
}
