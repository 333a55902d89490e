import Logging
import TocsinCore
import TocsinStore

/// Matches one stream's events against the subscriptions attached on this broker and queues
/// notifications, in seq order per subscription.
///
/// The tail loop (`runTail`) reads committed events from the store and hands them to
/// `dispatch`. A subscription that starts behind the tail first replays from the store
/// (`replay`); it joins live dispatch inside `goLiveIfCaughtUp`, an actor step that no
/// `dispatch` can interleave with, so nothing falls between replay and live delivery.
/// Actor methods never suspend, so their state changes are atomic.
actor StreamDispatcher {
    let stream: String
    private let store: any Store
    private let logger: Logger

    private(set) var epoch: String
    /// The last seq the tail has dispatched.
    private(set) var position: Int64
    private var schema: StreamSchema

    private struct ChannelState {
        var index: ChannelIndex
        /// Live subscriptions per interest.
        var subscribers: [InterestID: [LiveSubscription]] = [:]
    }

    private struct Attached {
        var subscription: LiveSubscription
        var interest: InterestID?
        /// Repetitive channels: matches collected since the last flush.
        var pending: [EventPayload] = []
        var pendingCount = 0
        var pendingSeq: Int64 = 0
        var nextFlushMillis: Int64 = 0
    }

    private var channels: [String: ChannelState] = [:]
    private var attached: [String: Attached] = [:]
    /// Ids of attached subscriptions on repetitive channels (the ticker visits only these).
    private var repetitive: Set<String> = []
    /// Subscriptions that start beyond the tail (it lags the store): they go live once the tail reaches their seq.
    private var waitingForTail: [String: Int64] = [:]
    private var matched: [InterestID] = []
    private let catalog: Catalog
    private let metrics: BrokerMetrics

    init(info: StreamInfo, store: any Store, catalog: Catalog, metrics: BrokerMetrics, logger: Logger) {
        self.stream = info.name
        self.epoch = info.epoch
        self.position = info.lastSeq
        self.schema = info.definition.schema
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: Attaching

    /// Where a subscription will start, resolved against the stream's current state.
    struct Start: Sendable {
        var seq: Int64
        var recovered: Bool
    }

    nonisolated static func resolve(_ from: StartPosition, acked: StreamPosition?, info: StreamInfo) -> Start {
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
    /// the same subscription (the client reconnected) is replaced.
    func attach(_ subscription: LiveSubscription) {
        detach(subscription.id)
        attached[subscription.id] = Attached(subscription: subscription)
        if subscription.isRepetitive { repetitive.insert(subscription.id) }
    }

    /// Stops delivering to a subscription, if `session` (when given) is the one it is attached
    /// to. Returns the subscription it detached.
    @discardableResult
    func detach(_ id: String, session: Session? = nil) -> LiveSubscription? {
        guard let a = attached[id] else { return nil }
        if let session, a.subscription.session !== session { return nil }
        attached.removeValue(forKey: id)
        waitingForTail.removeValue(forKey: id)
        repetitive.remove(id)
        let name = a.subscription.channel.name
        guard let interest = a.interest, var state = channels[name] else { return a.subscription }
        state.subscribers[interest]?.removeAll { $0 === a.subscription }
        if state.subscribers[interest]?.isEmpty == true { state.subscribers.removeValue(forKey: interest) }
        state.index.release(interest)
        channels[name] = state.index.count == 0 ? nil : state
        return a.subscription
    }

    /// Joins live dispatch if the replay reached the tail; otherwise returns how far to replay.
    /// A subscription that starts beyond the tail joins when the tail gets there.
    func goLiveIfCaughtUp(_ subscription: LiveSubscription, replayedTo seq: Int64) -> Int64? {
        guard var a = attached[subscription.id], a.subscription === subscription else { return nil }
        if seq < position { return position }
        if seq > position {
            waitingForTail[subscription.id] = seq
            return nil
        }
        makeLive(&a)
        attached[subscription.id] = a
        return nil
    }

    private func makeLive(_ a: inout Attached) {
        guard a.interest == nil else { return }
        let subscription = a.subscription
        let channel = subscription.channel
        var state = channels[channel.name] ?? ChannelState(index: ChannelIndex(channel: channel))
        let interest = state.index.acquire(params: subscription.params)
        state.subscribers[interest, default: []].append(subscription)
        channels[channel.name] = state
        a.interest = interest
    }

    /// Makes live the waiting subscriptions the tail has now reached.
    private func releaseWaiting() {
        for (id, seq) in waitingForTail where seq <= position {
            waitingForTail.removeValue(forKey: id)
            guard var a = attached[id] else { continue }
            makeLive(&a)
            attached[id] = a
        }
    }

    /// Replays the subscription's matches after `startSeq` from the store, then makes it live.
    /// Runs in the caller's task, outside the actor, so replays never block live dispatch.
    nonisolated func replay(_ subscription: LiveSubscription, from startSeq: Int64, nowMillis: @Sendable () -> Int64) async throws {
        var seq = startSeq
        while let target = await goLiveIfCaughtUp(subscription, replayedTo: seq) {
            while seq < target {
                let limit = min(1000, Int(target - seq))
                let events = try await store.readEvents(stream: stream, after: seq, limit: limit)
                if events.isEmpty { break }
                let schema = await self.schema
                for event in events where event.seq <= target {
                    if let record = Self.record(event, schema: schema), subscription.matches(record, nowMillis: nowMillis()) {
                        guard await deliverReplayed(subscription, event: event) else { return }
                    }
                    seq = event.seq
                }
                if events.count < limit { seq = max(seq, target) }
            }
            seq = max(seq, target)
        }
    }

    private func deliverReplayed(_ subscription: LiveSubscription, event: StoredEvent) -> Bool {
        guard var a = attached[subscription.id], a.subscription === subscription else { return false }
        var wakes = WakeBatch()
        deliver(&a, event: event, wakes: &wakes)
        wakes.run()
        attached[subscription.id] = a
        return true
    }

    // MARK: Live dispatch

    /// Matches committed events (in seq order) and queues notifications; returns how many
    /// notifications it queued (repetitive matches count when flushed).
    @discardableResult
    func dispatch(_ events: [StoredEvent], nowMillis: Int64) -> Int {
        var sent = 0
        var wakes = WakeBatch()
        defer { wakes.run() }
        for event in events where event.seq > position {
            if !waitingForTail.isEmpty { releaseWaiting() }
            position = event.seq
            guard !channels.isEmpty, let record = Self.record(event, schema: schema) else { continue }
            var pushSuffix: String? = nil
            for state in channels.values {
                matched.removeAll(keepingCapacity: true)
                state.index.match(record, nowMillis: nowMillis, into: &matched)
                for interest in matched {
                    for subscription in state.subscribers[interest] ?? [] {
                        if subscription.isRepetitive || subscription.channel.definition.delivery == .notify {
                            guard var a = attached[subscription.id] else { continue }
                            if deliver(&a, event: event, wakes: &wakes) { sent += 1 }
                            attached[subscription.id] = a
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
    private func deliver(_ a: inout Attached, event: StoredEvent, wakes: inout WakeBatch) -> Bool {
        let subscription = a.subscription
        switch (subscription.channel.definition.mode, subscription.channel.definition.delivery) {
        case (.continuous, .push):
            let suffix = NotifyFrame.suffix(seq: event.seq, .event(event.json))
            return subscription.session.send(.notify(prefix: subscription.framePrefix, suffix: suffix), wakes: &wakes)
        case (.continuous, .notify):
            let suffix = NotifyFrame.suffix(seq: event.seq, .count(1))
            return subscription.session.send(.notify(prefix: subscription.framePrefix, suffix: suffix), wakes: &wakes)
        case (.repetitive, let delivery):
            if delivery == .push { a.pending.append(EventPayload(seq: event.seq, json: event.json)) }
            a.pendingCount += 1
            a.pendingSeq = event.seq
            return false
        }
    }

    /// Sends what repetitive subscriptions collected, for those whose period is due.
    func flushRepetitive(nowMillis: Int64) {
        for id in repetitive {
            guard var a = attached[id], case .repetitive(let period) = a.subscription.channel.definition.mode else { continue }
            if a.nextFlushMillis == 0 { a.nextFlushMillis = nowMillis + period }
            if nowMillis >= a.nextFlushMillis {
                a.nextFlushMillis = nowMillis + period
                if a.pendingCount > 0 {
                    let n: ServerMessage.Notification =
                        a.subscription.channel.definition.delivery == .push ? .events(a.pending) : .count(a.pendingCount)
                    a.subscription.session.send(.notify(prefix: a.subscription.framePrefix, suffix: NotifyFrame.suffix(seq: a.pendingSeq, n)))
                    a.pending.removeAll()
                    a.pendingCount = 0
                }
            }
            attached[id] = a
        }
    }

    var attachedSubscriptions: [LiveSubscription] { attached.values.map(\.subscription) }

    /// The stream was recreated: its epoch starts over at seq 0. Every attached subscription is
    /// recompiled against the new schema, told with a `subscribed` frame (no id, recovered
    /// false, seq 0), and stays live, so the tail delivers the new epoch from its first event.
    /// One whose channel no longer compiles or binds is detached with an `unsubscribed` frame.
    func reset(to info: StreamInfo) {
        epoch = info.epoch
        schema = info.definition.schema
        position = 0
        channels = [:]
        waitingForTail = [:]
        let previous = attached
        attached = [:]
        repetitive = []
        for old in previous.values.map(\.subscription) {
            guard let definition = catalog.channel(old.channel.name)?.definition,
                let channel = try? ChannelCompiler.compile(definition, schema: info.definition.schema),
                old.params.count == definition.params.count
            else {
                _ = old.session.removeSubscription(old.id)
                old.session.send(.unsubscribed(id: nil, subscription: old.id))
                continue
            }
            let renewed = LiveSubscription(id: old.id, session: old.session, channel: channel, params: old.params)
            var a = Attached(subscription: renewed)
            makeLive(&a)
            attached[renewed.id] = a
            if renewed.isRepetitive { repetitive.insert(renewed.id) }
            var params: [String: JSONValue] = [:]
            for (p, v) in zip(definition.params, old.params) { params[p.name] = v.json }
            renewed.session.send(
                .subscribed(
                    id: nil,
                    SubscriptionInfo(
                        subscription: renewed.id, channel: channel.name, params: params, stream: stream,
                        position: StreamPosition(epoch: info.epoch, seq: 0), recovered: false)))
        }
    }

    func updateSchema(_ info: StreamInfo) {
        if info.epoch == epoch { schema = info.definition.schema }
    }

    // MARK: Tail

    /// Follows the store's change feed and dispatches new events until cancelled. Events this
    /// process appended come straight from the feed; others (another process appended them, or
    /// the feed no longer holds them) are read from the store. The stream is read again only
    /// when the feed does not know its epoch or knows another one (it was recreated).
    nonisolated func runTail(nowMillis: @escaping @Sendable () -> Int64) async {
        let changes = store.changes
        while !Task.isCancelled {
            let seen = await position
            let current = await epoch
            await changes.wait(stream: stream, after: seen, epoch: current)
            if Task.isCancelled { return }
            do {
                if changes.epoch(of: stream) != current {
                    guard let info = try await store.stream(named: stream) else { return }
                    if info.epoch != current {
                        await reset(to: info)
                        continue
                    }
                }
                var from = seen
                while true {
                    let events: [StoredEvent]
                    if let recent = changes.recentEvents(stream: stream, epoch: current, after: from, limit: 1000) {
                        events = recent
                    } else {
                        events = try await store.readEvents(stream: stream, after: from, limit: 1000)
                    }
                    guard let last = events.last else { break }
                    let sent = await dispatch(events, nowMillis: nowMillis())
                    if sent > 0 {
                        metrics.deliveredNotifications.increment(by: Int64(sent))
                        metrics.totals.delivered.add(sent, ordering: .relaxed)
                    }
                    from = last.seq
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

extension StreamDispatcher {
    /// Detaches every subscription of a channel (the channel was deleted) and returns them.
    func detachAll(channel: String) -> [LiveSubscription] {
        attachedSubscriptions.filter { $0.channel.name == channel }.compactMap { detach($0.id) }
    }
}
