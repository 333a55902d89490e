public import TocsinCore
import Synchronization

/// Tells waiters when a stream moves past what they have seen, and keeps the events this
/// process appended most recently, so the tail that dispatches them need not read them back.
///
/// Appends in this process call `appended` right after their commit; a poller calls `advance`
/// for changes made by other processes sharing the store (their events are not kept: readers
/// read those from the store). A stream is known by its epoch: a new epoch (the stream was
/// recreated) wakes every waiter and drops the kept events of the old one.
///
/// A stream may have one consumer (`consume`): it is handed the events this process commits,
/// on the committing thread, before any waiter is looked at. A waiter that waits on a `Cursor`
/// its consumer moves forward is then not woken for events that were already taken care of,
/// which saves a thread wake-up per commit.
///
/// The feed also says when stream or channel definitions changed (`definitionChanges`): a store
/// whose definitions other processes may change calls `definitionsChanged` when it notices, and
/// the broker reloads its catalog.
public final class ChangeFeed: Sendable {
    /// A seq its owner moves forward (the last event it has handled). A waiter on a cursor
    /// wakes when the stream is beyond the cursor's value at the time of the change.
    public final class Cursor: Sendable {
        private let seq: Atomic<Int64>

        public init(_ seq: Int64) { self.seq = Atomic(seq) }

        public var value: Int64 { seq.load(ordering: .acquiring) }

        public func set(_ value: Int64) { seq.store(value, ordering: .releasing) }

        /// Moves the cursor to `value` unless it is there or beyond already.
        public func advance(to value: Int64) { seq.max(value, ordering: .releasing) }
    }

    public typealias Consumer = @Sendable (_ epoch: String, _ events: [StoredEvent]) -> Void

    /// Most events kept per stream.
    public static let recentCapacity = 2048

    private struct Waiter {
        var id: Int
        var after: Cursor
        var epoch: String?
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct StreamState {
        var epoch: String?
        var lastSeq: Int64 = 0
        /// Events appended here with consecutive seqs, the newest last, all of `epoch`.
        var recent: [StoredEvent] = []
        var waiters: [Waiter] = []
        var consumer: Consumer?

        func shouldWake(_ w: Waiter) -> Bool {
            lastSeq > w.after.value || (w.epoch != nil && epoch != nil && epoch != w.epoch)
        }
    }

    private struct State {
        var streams: [String: StreamState] = [:]
        var nextWaiter = 0
        var definitionListeners: [Int: AsyncStream<Void>.Continuation] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Records that `stream` is at `seq` in `epoch` and wakes whoever waits for less (or for
    /// another epoch).
    public func advance(stream: String, epoch: String, to seq: Int64) {
        update(stream) { s in
            if s.epoch != epoch {
                s.epoch = epoch
                s.lastSeq = seq
                s.recent = []
            } else {
                s.lastSeq = max(s.lastSeq, seq)
            }
        }
    }

    /// Hands `stream`'s events committed in this process to `consumer` from now on, replacing
    /// any earlier one. It runs on the committing thread, in commit order, while the store's
    /// writer is still held: the next commit waits for it, so it must not wait for anything
    /// slow (it takes locks held only briefly, and queues work for others).
    public func consume(stream: String, _ consumer: @escaping Consumer) {
        state.withLock { state in
            var s = state.streams[stream] ?? StreamState()
            s.consumer = consumer
            state.streams[stream] = s
        }
    }

    /// Records events this process has just committed (consecutive seqs, oldest first): the
    /// stream's consumer gets them first, then waiters wake.
    public func appended(stream: String, epoch: String, events: [StoredEvent]) {
        guard let last = events.last else { return }
        if let consumer = state.withLock({ $0.streams[stream]?.consumer }) { consumer(epoch, events) }
        update(stream) { s in
            if s.epoch != epoch {
                // A new epoch starts over: the old one's seqs say nothing about it.
                s.epoch = epoch
                s.recent = []
                s.lastSeq = 0
            }
            // Kept only while consecutive: another process's events in between leave a gap the store fills.
            if let previous = s.recent.last, previous.seq + 1 != events[0].seq { s.recent = [] }
            s.recent.append(contentsOf: events)
            if s.recent.count > 2 * Self.recentCapacity { s.recent.removeFirst(s.recent.count - Self.recentCapacity) }
            s.lastSeq = max(s.lastSeq, last.seq)
        }
    }

    private func update(_ stream: String, _ body: (inout StreamState) -> Void) {
        let woken: [CheckedContinuation<Void, Never>] = state.withLock { state in
            var s = state.streams[stream] ?? StreamState()
            state.streams[stream] = nil
            defer { state.streams[stream] = s }
            body(&s)
            guard !s.waiters.isEmpty else { return [] }
            var wake: [CheckedContinuation<Void, Never>] = []
            var keep: [Waiter] = []
            for w in s.waiters {
                if s.shouldWake(w) { wake.append(w.continuation) } else { keep.append(w) }
            }
            s.waiters = keep
            return wake
        }
        for c in woken { c.resume() }
    }

    /// Stream or channel definitions changed: tells every `definitionChanges` sequence.
    public func definitionsChanged() {
        for listener in state.withLock({ Array($0.definitionListeners.values) }) { listener.yield() }
    }

    /// One element each time definitions change from now on (changes that come faster than
    /// they are taken count as one), until the iterating task is cancelled.
    public func definitionChanges() -> AsyncStream<Void> {
        let (changes, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state in
            state.nextWaiter += 1
            state.definitionListeners[state.nextWaiter] = continuation
            return state.nextWaiter
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.definitionListeners.removeValue(forKey: id) }
        }
        return changes
    }

    public func lastSeq(of stream: String) -> Int64 {
        state.withLock { $0.streams[stream]?.lastSeq ?? 0 }
    }

    /// Every stream's epoch and last seq as recorded here (streams with no epoch yet left out).
    public var positions: [String: StreamPosition] {
        state.withLock { state in
            state.streams.compactMapValues { s in s.epoch.map { StreamPosition(epoch: $0, seq: s.lastSeq) } }
        }
    }

    /// The stream's epoch as last recorded here; nil when nothing was recorded yet.
    public func epoch(of stream: String) -> String? {
        state.withLock { $0.streams[stream]?.epoch }
    }

    /// Up to `limit` events of `epoch` after `after`, oldest first, when this feed kept all of
    /// them from `after + 1` on; nil when the caller must read the store. The result may end
    /// before the stream does (events of other processes are not kept).
    public func recentEvents(stream: String, epoch: String, after: Int64, limit: Int) -> [StoredEvent]? {
        state.withLock { state in
            guard let s = state.streams[stream], s.epoch == epoch, let first = s.recent.first, let last = s.recent.last,
                first.seq <= after + 1, after < last.seq
            else { return nil }
            let start = Int(after + 1 - first.seq)
            return Array(s.recent[start..<(start + min(limit, s.recent.count - start))])
        }
    }

    /// Returns once the stream's last seq is beyond `after`, its epoch is known and differs from
    /// `epoch` (when given), or the task is cancelled.
    public func wait(stream: String, after: Int64, epoch: String? = nil) async {
        await wait(stream: stream, after: Cursor(after), epoch: epoch)
    }

    /// As `wait(stream:after:epoch:)`, with `after` read whenever the stream changes.
    public func wait(stream: String, after: Cursor, epoch: String? = nil) async {
        let id: Int = state.withLock { s in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    let waiter = Waiter(id: id, after: after, epoch: epoch, continuation: c)
                    var s = state.streams[stream] ?? StreamState()
                    if s.shouldWake(waiter) || Task.isCancelled { return true }
                    s.waiters.append(waiter)
                    state.streams[stream] = s
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let c = state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard let i = state.streams[stream]?.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.streams[stream]!.waiters.remove(at: i).continuation
            }
            c?.resume()
        }
    }
}
