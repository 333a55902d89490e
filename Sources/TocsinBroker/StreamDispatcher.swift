import Logging
import Synchronization
import TocsinCore
import TocsinStore

/// Matches one stream's events against the subscriptions attached on this broker and queues
/// notifications, in seq order per subscription: the owner of a `StreamDispatch.StateMachine`,
/// which decides everything; this type only calls it and carries out what it decided.
///
/// Events this process commits are dispatched right after their commit, on the committing
/// thread (`dispatchCommitted`, the store's change-feed consumer), when they follow on from
/// what was dispatched. Everything else — other processes' events, a recreated stream, events
/// after a gap — the tail loop (`runTail`) reads and dispatches. A subscription that starts
/// behind the tail first replays from the store (`replay`, reading outside any lock); it joins
/// live dispatch in the machine's `goLiveIfCaughtUp`, a step under the same lock as every
/// dispatch, so nothing falls between replay and live delivery.
///
/// Ordering without sending under the lock: every step runs on the machine under `state`'s
/// lock and appends its actions to one FIFO (`State.queue`) in the order they were decided.
/// Whoever finds nobody draining becomes the drainer: it takes the whole queue, applies it
/// after releasing the lock (queueing frames on sessions, which takes their locks), and
/// repeats until the queue is empty, then clears the flag under the lock. Others append and
/// leave. One drainer at a time, taking the queue in order, so each session gets its frames in
/// the order the machine decided them: per subscription in seq order, with no duplicate and no
/// gap between replay and live delivery. The state lock is never held while sending, and the
/// machine's lock is never taken inside a session's.
///
/// Taking a batch from the queue and applying it happens under a second lock, `applying`, which
/// producers never wait for. Only `detach`, `detachAll` and an `attach` that replaces another
/// attachment take it after their step (`settle`): when they return, everything decided before
/// them — frames for the subscription they detached included — has been queued on its session,
/// and nothing is decided for it afterwards. So the `unsubscribed` a caller sends next comes
/// after the subscription's last notification, as when this type sent under its lock.
///
/// The price: whoever drains (usually the commit thread; sometimes a replay's task, the ticker
/// or the tail) also applies what others decide meanwhile, and a `detach` waits for a batch
/// being applied, as it waited for the lock before. Lock order: `applying`, then `state`, then
/// a session's or the catalog's (`reset` compiles under `state`); never the other way round.
final class StreamDispatcher: Sendable {
    typealias Machine = StreamDispatch.StateMachine<LiveSubscription>
    typealias Action = Machine.Action

    let stream: String
    let store: any Store
    let logger: Logger
    private let catalog: Catalog
    private let metrics: BrokerMetrics
    /// The last seq dispatched, for the change feed: the tail waits for the stream to move
    /// beyond it, so events dispatched at their commit do not wake the tail.
    let dispatched: ChangeFeed.Cursor
    private let state: Mutex<State>
    /// Held by whoever takes a batch from the queue and applies it (see above).
    private let applying = Mutex(())
    /// The clock of time-relative channel conditions (`now()`), whichever path dispatches.
    let nowMillis: @Sendable () -> Int64
    /// What enriches the notifications of channels with `enrich` clauses (live and replayed).
    let enricher: Enricher?
    /// Records a span for each notification of a traced event (the machine says which).
    let tracing: BrokerTracing?

    private struct State {
        var machine: Machine
        /// Actions decided and not yet taken by a drainer, in the order decided.
        var queue: [Action] = []
        /// Someone is applying the queue; whoever appends to it then leaves.
        var draining = false
        /// The last drainer's emptied batch, kept so the queue does not grow from nothing again.
        var spare: [Action] = []
    }

    /// A drained batch buffer bigger than this is not kept for the next batch.
    private static let maxSpareActions = 8192
    private let unreadableLog = Mutex(LogThrottle())

    init(
        info: StreamInfo, store: any Store, catalog: Catalog, metrics: BrokerMetrics, logger: Logger,
        nowMillis: @escaping @Sendable () -> Int64 = WallClock.nowMillis, enricher: Enricher? = nil, tracing: BrokerTracing? = nil
    ) {
        self.stream = info.name
        self.nowMillis = nowMillis
        self.enricher = enricher
        self.tracing = tracing
        var machine = Machine(stream: info.name, epoch: info.epoch, position: info.lastSeq, schema: info.definition.schema)
        machine.liveDeliverySpans = tracing?.deliverySpansPerEvent ?? 0
        if let enricher {
            machine.enrich = { @Sendable channel, record, params, now in
                enricher.json(channel, record: record, params: params, nowMillis: now)
            }
        }
        self.state = Mutex(State(machine: machine))
        self.dispatched = ChangeFeed.Cursor(info.lastSeq)
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.logger = logger
    }

    /// What a `fetch` on `session` needs of a subscription attached to it here: its channel and
    /// current params, and how far this stream was dispatched (nil when it is not attached to
    /// that session). Served without reading the store: the attachment was checked when made.
    struct AttachedView: Sendable {
        let channel: CompiledChannel
        let params: [Value]
        let stream: String
        let epoch: String
        let position: Int64
        let schema: StreamSchema
    }

    func attachedView(_ id: String, session: Session) -> AttachedView? {
        state.withLock { s in
            guard let a = s.machine.attached[id], a.subscriber.recipient.session === session else { return nil }
            return AttachedView(
                channel: a.channel, params: a.params, stream: stream, epoch: s.machine.epoch, position: s.machine.position, schema: s.machine.schema)
        }
    }

    var epoch: String { state.withLock { $0.machine.epoch } }
    /// The last seq dispatched.
    var position: Int64 { state.withLock { $0.machine.position } }
    var schema: StreamSchema { state.withLock { $0.machine.schema } }

    // MARK: Running the machine

    /// Runs one step of the machine under the lock, then applies the queue if nobody is.
    func step<T: Sendable>(_ body: (inout Machine, inout [Action]) -> T) -> T {
        let (result, spare) = state.withLock { s -> (T, [Action]?) in
            let result = body(&s.machine, &s.queue)
            guard !s.queue.isEmpty, !s.draining else { return (result, nil) }
            s.draining = true
            var spare: [Action] = []
            swap(&spare, &s.spare)
            return (result, spare)
        }
        if var batch = spare { drain(&batch) }
        return result
    }

    /// A query or a step that decides nothing.
    func read<T: Sendable>(_ body: (inout Machine) -> T) -> T {
        state.withLock { body(&$0.machine) }
    }

    /// The drainer's loop: applies the queue until it is empty, then gives up the role (and
    /// leaves `batch`, an empty buffer, as the next drainer's spare).
    private func drain(_ batch: inout [Action]) {
        while applying.withLock({ _ in applyQueue(&batch, drainer: true) }) {}
    }

    /// Returns once everything decided so far has been applied (see the type's comment).
    private func settle() {
        var batch: [Action] = []
        applying.withLock { _ in _ = applyQueue(&batch, drainer: false) }
    }

    /// Takes the queue and applies it; false when it was empty (and the drainer, if that is
    /// the caller, has given up the role). Runs under `applying`.
    private func applyQueue(_ batch: inout [Action], drainer: Bool) -> Bool {
        let taken = state.withLock { s -> Bool in
            guard !s.queue.isEmpty else {
                if drainer {
                    s.draining = false
                    swap(&batch, &s.spare)
                }
                return false
            }
            swap(&batch, &s.queue)
            return true
        }
        guard taken else { return false }
        apply(batch)
        if batch.capacity > Self.maxSpareActions { batch = [] } else { batch.removeAll(keepingCapacity: true) }
        return true
    }

    private func apply(_ actions: [Action]) {
        var wakes = WakeBatch()
        for action in actions {
            switch action {
            case .send(let to, let frame):
                to.session.send(frame, wakes: &wakes)
            case .notRecovered(let to, let info):
                to.session.send(.subscribed(id: nil, info), wakes: &wakes)
            case .unsubscribed(let to, let id):
                _ = to.session.removeSubscription(id)
                to.session.send(.unsubscribed(id: nil, subscription: id), wakes: &wakes)
            case .reportUnreadable(let seqs):
                reportUnreadable(seqs)
            case .traceDelivery(let to, let seq, let trace, let replayed):
                tracing?.delivered(to, seq: seq, trace: trace, replayed: replayed)
            }
        }
        wakes.run()
    }

    // MARK: Attaching

    /// Registers a subscription that will start after `startSeq`. It receives nothing until
    /// `replay` runs (after the caller has queued its reply frame). An earlier attachment of
    /// the same subscription (the client reconnected) is replaced and returned, once everything
    /// decided for it has been queued.
    @discardableResult
    func attach(_ subscription: LiveSubscription) -> LiveSubscription? {
        let replaced = read { m in
            m.attach(subscription.id, recipient: subscription, channel: subscription.channel, params: subscription.params)
        }
        if replaced != nil { settle() }
        return replaced
    }

    /// Stops delivering to a subscription, if `session` (when given) is the one it is attached
    /// to. Returns the subscription it detached, once everything decided for it has been queued.
    @discardableResult
    func detach(_ id: String, session: Session? = nil) -> LiveSubscription? {
        let detached = read { m -> LiveSubscription? in
            if let session, m.recipient(of: id)?.session !== session { return nil }
            return m.detach(id)
        }
        if detached != nil { settle() }
        return detached
    }

    /// Detaches every subscription of a channel (the channel was deleted) and returns them.
    func detachAll(channel: String) -> [LiveSubscription] {
        let detached = read { m in m.attached(channel: channel).compactMap { m.detach($0) } }
        if !detached.isEmpty { settle() }
        return detached
    }

    func updateSchema(_ info: StreamInfo) {
        read { $0.updateSchema(epoch: info.epoch, schema: info.definition.schema) }
    }

    /// Stored events that no longer read back against the stream's schema (stored before a
    /// rule tightened, or damaged) cannot be matched: never skipped silently. Each is counted
    /// (`tocsin_unreadable_events_total`) and logged, at most once a minute per stream.
    func reportUnreadable(_ seqs: [Int64]) {
        guard let first = seqs.first else { return }
        metrics.unreadableEvents.increment(by: Int64(seqs.count))
        guard let count = unreadableLog.withLock({ $0.occurred() }) else { return }
        logger.error(
            "stored events do not read back against the stream's schema; they cannot be matched or delivered",
            metadata: ["stream": "\(stream)", "seq": "\(first)", "occurrences": "\(count + seqs.count - 1)"])
    }

    /// Commit → notifications decided, for a batch that notified someone: once per event.
    func recordLatency(_ events: [StoredEvent]) {
        let now = nowMillis()
        var window = LatencyWindow()
        for e in events { window.record(Double(now - e.publishedAtMillis)) }
        metrics.totals.latency.withLock { $0.merge(window) }
        if let p = window.percentile(0.5) { metrics.notifyLatency.recordMilliseconds(p) }
    }

    /// Counts notifications decided by live dispatch.
    @discardableResult
    func count(_ sent: Int) -> Int {
        if sent > 0 {
            metrics.deliveredNotifications.increment(by: Int64(sent))
            metrics.totals.delivered.add(sent, ordering: .relaxed)
        }
        return sent
    }

    /// The stream was recreated: its epoch starts over at seq 0. Every attached subscription is
    /// recompiled against the new schema, told with a `subscribed` frame (no id, recovered
    /// false, seq 0), and stays live, so it gets the new epoch from its first event.
    /// One whose channel no longer compiles or binds is detached with an `unsubscribed` frame.
    func reset(to info: StreamInfo) {
        let schema = info.definition.schema
        let datasets = catalog.datasetsByName
        step { m, actions in
            m.reset(
                epoch: info.epoch, schema: schema,
                recompile: { name, params in
                    guard let definition = catalog.channel(name)?.definition,
                        let channel = try? ChannelCompiler.compile(definition, schema: schema, datasets: datasets),
                        params.count == definition.params.count
                    else { return nil }
                    return channel
                }, into: &actions)
            dispatched.set(0)
        }
    }
}
