import Logging
import NIOCore
import Synchronization
import TocsinCore

/// A frame waiting in a session's outbox.
enum OutFrame: Sendable {
    case text(String)
    /// A `notify` frame: the per-subscription prefix and the per-event suffix (see NotifyFrame).
    case notify(prefix: String, suffix: String)
}

/// One client connection: identity, its subscriptions, and an outbox.
///
/// Producers (dispatchers, replays, request handlers) call `send`, which never waits. When the
/// outbox goes from empty to non-empty the session calls `onReady` once; the transport then
/// drains everything queued with `take` (on its event loop: one flush per batch, however many
/// frames) until `take` comes back empty. So a burst of notifications to one client costs one
/// wake-up and one socket write, not one per frame.
///
/// Slow-consumer policy: the bytes a connection has pending — frames in the outbox plus what the
/// socket has not taken yet (`transportBuffered`) — are bounded by `maxOutboundBytes`. A live
/// frame that finds more than that pending closes the session as a slow consumer: the transport
/// sends `error {code: "slow_consumer"}` and closes the connection with 1008. Nothing is lost:
/// the client reconnects and resumes from its acknowledged position. Replays do not count against
/// the bound: they wait for room (`waitForRoom`) instead of filling the outbox.
final class Session: Sendable {
    enum CloseReason: Sendable, Equatable {
        case slowConsumer
        /// Told to migrate long ago and still here: closed so it reconnects through `assign`.
        case migrationTimedOut
        /// Sent no message within the first-message timeout.
        case silent
        /// Gave no valid token within the first-message timeout (authentication on).
        case unauthenticated
        /// Its token expired and no `refresh` came in time.
        case tokenExpired
    }

    fileprivate struct State {
        var queue = Outbox()
        /// Bytes the socket had not taken yet at the transport's last report.
        var transportBytes = 0
        /// Replays waiting for the pending bytes to fall to half the bound.
        var roomWaiters: [CheckedContinuation<Void, Never>] = []
        var drainScheduled = false
        var closed: CloseReason?
        var finished = false
        var client: String?
        /// The connection's token, once verified (authentication on).
        var grant: Grant?
        var admittedClient: String?
        /// Subscription id -> stream, for this session's attached subscriptions.
        var subscriptions: [String: String] = [:]
    }

    let id: String
    /// Its logs carry the session id. Made when something is logged (rarely), so an idle
    /// connection does not keep a copy of the logger with its own metadata (a few hundred bytes).
    var logger: Logger {
        var logger = baseLogger
        logger[metadataKey: "session"] = "\(id)"
        return logger
    }
    private let baseLogger: Logger
    /// The bound on pending bytes (see the slow-consumer policy above).
    let maxOutboundBytes: Int
    /// Where `drain` must run; nil runs it in place (tests).
    let eventLoop: (any EventLoop)?
    /// Writes what `take` returns until it says idle; runs on `eventLoop`.
    let drain: @Sendable (Session) -> Void
    private let state = Mutex(State())

    /// The peer's address, for logs.
    let peer: String

    init(
        id: String, maxOutboundBytes: Int, logger: Logger, eventLoop: (any EventLoop)? = nil, peer: String = "local",
        drain: @escaping @Sendable (Session) -> Void
    ) {
        self.id = id
        self.peer = peer
        self.maxOutboundBytes = maxOutboundBytes
        self.baseLogger = logger
        self.eventLoop = eventLoop
        self.drain = drain
    }

    private func onReady() {
        if let eventLoop {
            eventLoop.execute { self.drain(self) }
        } else {
            drain(self)
        }
    }

    var client: String? { state.withLock { $0.client } }

    /// Whom the rate limits count this connection's requests against: its token's client (nil
    /// without authentication: limits are per token).
    var rateKey: String? { grant?.client }

    /// The client id counted against `maxConnectionsPerClient` for this connection, once it has a token.
    var admittedClient: String? {
        get { state.withLock { $0.admittedClient } }
        set { state.withLock { $0.admittedClient = newValue } }
    }

    /// The connection's verified token, if any.
    var grant: Grant? {
        get { state.withLock { $0.grant } }
        set { state.withLock { $0.grant = newValue } }
    }

    func identify(as client: String) -> Bool {
        state.withLock { s in
            guard s.client == nil else { return false }
            s.client = client
            return true
        }
    }

    /// Undoes `identify` (a hello that failed before it attached anything), so the client can
    /// say hello again on this connection.
    func forgetClient() { state.withLock { $0.client = nil } }

    func addSubscription(_ id: String, stream: String) { state.withLock { $0.subscriptions[id] = stream } }
    func removeSubscription(_ id: String) -> String? { state.withLock { $0.subscriptions.removeValue(forKey: id) } }
    func stream(ofSubscription id: String) -> String? { state.withLock { $0.subscriptions[id] } }
    var subscriptions: [String: String] { state.withLock { $0.subscriptions } }
    var subscriptionCount: Int { state.withLock { $0.subscriptions.count } }

    /// Closes the connection for `reason` (the transport writes the close frame).
    func close(_ reason: CloseReason) {
        let wake = state.withLock { s -> Bool in
            guard s.closed == nil, !s.finished else { return false }
            s.closed = reason
            let wake = !s.drainScheduled
            s.drainScheduled = true
            return wake
        }
        if wake { onReady() }
    }

    /// Queues a frame. Returns false when the session is closed or just overflowed.
    @discardableResult
    func send(_ frame: OutFrame) -> Bool {
        let (accepted, wake) = enqueue(frame)
        if wake { onReady() }
        return accepted
    }

    /// Queues a frame, leaving the wake-up to `wakes` (one per event loop for a whole dispatch).
    @discardableResult
    func send(_ frame: OutFrame, wakes: inout WakeBatch) -> Bool {
        let (accepted, wake) = enqueue(frame)
        if wake { wakes.add(self) }
        return accepted
    }

    private func enqueue(_ frame: OutFrame) -> (accepted: Bool, wake: Bool) {
        state.withLock { s in
            guard s.closed == nil, !s.finished else { return (false, false) }
            // Over the bound before this frame: one frame larger than the bound still goes out alone.
            if s.queue.payloadBytes + s.transportBytes > maxOutboundBytes {
                s.closed = .slowConsumer
            } else {
                s.queue.append(frame)
            }
            let wake = !s.drainScheduled
            s.drainScheduled = true
            return (s.closed == nil, wake)
        }
    }

    @discardableResult
    func send(_ message: ServerMessage) -> Bool {
        send(.text(message.encoded))
    }

    func send(_ message: ServerMessage, wakes: inout WakeBatch) {
        send(.text(message.encoded), wakes: &wakes)
    }

    /// The transport reports how many bytes the socket has not taken yet (0 once it is writable
    /// again). Past the bound the session closes as a slow consumer; at half of it waiting
    /// replays go on.
    func transportBuffered(_ bytes: Int) {
        let (wake, waiters) = state.withLock { s -> (Bool, [CheckedContinuation<Void, Never>]) in
            guard s.closed == nil, !s.finished else { return (false, []) }
            let waiters = s.report(transportBytes: bytes, bound: maxOutboundBytes)
            guard s.closed != nil else { return (false, waiters) }
            let wake = !s.drainScheduled
            s.drainScheduled = true
            return (wake, waiters)
        }
        for waiter in waiters { waiter.resume() }
        if wake { onReady() }
    }

    /// Whether a replay may queue more: the pending bytes are at most half the bound.
    var hasRoom: Bool { state.withLock { $0.queue.payloadBytes + $0.transportBytes <= maxOutboundBytes / 2 } }

    /// Replays are waiting for room (tests).
    var hasWaiters: Bool { state.withLock { !$0.roomWaiters.isEmpty } }

    /// Returns once the pending bytes are at most half the bound, or the session is closed.
    func waitForRoom() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.closed != nil || s.finished || s.queue.payloadBytes + s.transportBytes <= maxOutboundBytes / 2 { return true }
                s.roomWaiters.append(waiter)
                return false
            }
            if ready { waiter.resume() }
        }
    }

    /// The connection is gone: drop everything and refuse further frames.
    func finish() {
        let waiters = state.withLock { s in
            s.finished = true
            s.queue = Outbox()
            defer { s.roomWaiters = [] }
            return s.roomWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    enum Next: Equatable {
        /// Write these, then call `take` again.
        case frames(Outbox)
        /// Nothing queued; the next `send` calls `onReady` again.
        case idle
        case close(CloseReason)
        case finished
    }

    /// The drainer's step. Frames it takes count as the transport's until it reports otherwise:
    /// `transportBuffered` is what the socket had not taken after the drain's last write (as
    /// `transportBuffered(_:)` would report it, in the same step), nil before its first.
    func take(transportBuffered reported: Int? = nil) -> Next {
        let (next, waiters) = state.withLock { s -> (Next, [CheckedContinuation<Void, Never>]) in
            if s.finished {
                s.drainScheduled = false
                return (.finished, [])
            }
            var waiters: [CheckedContinuation<Void, Never>] = []
            if let reported, s.closed == nil { waiters = s.report(transportBytes: reported, bound: maxOutboundBytes) }
            if let reason = s.closed {
                s.queue = Outbox()
                s.drainScheduled = false
                s.finished = true
                defer { s.roomWaiters = [] }
                return (.close(reason), waiters + s.roomWaiters)
            }
            if s.queue.isEmpty {
                s.drainScheduled = false
                return (.idle, waiters)
            }
            var taken = Outbox()
            swap(&taken, &s.queue)
            s.transportBytes += taken.payloadBytes
            return (.frames(taken), waiters)
        }
        for waiter in waiters { waiter.resume() }
        return next
    }
}

extension OutFrame: Equatable {}

/// The frames waiting in a session's outbox, in order. A drain most often finds one (a
/// subscriber gets an event's notification before the next event), which is held without an
/// array: no allocation per notification.
struct Outbox: RandomAccessCollection, Equatable, ExpressibleByArrayLiteral {
    private var head: OutFrame?
    /// The frames after `head`; empty while `head` is nil.
    private var tail: [OutFrame] = []
    /// The frames' payloads, in bytes.
    private(set) var payloadBytes = 0

    init() {}

    init(_ frames: some Sequence<OutFrame>) {
        for frame in frames { append(frame) }
    }

    init(arrayLiteral frames: OutFrame...) {
        self.init(frames)
    }

    mutating func append(_ frame: OutFrame) {
        payloadBytes += frame.payloadSize
        if head == nil { head = frame } else { tail.append(frame) }
    }

    var startIndex: Int { 0 }
    var endIndex: Int { head == nil ? 0 : 1 + tail.count }
    subscript(position: Int) -> OutFrame { position == 0 ? head! : tail[position - 1] }
}

extension Session.State {
    /// The transport's report of the bytes the socket has not taken yet: past `bound` the
    /// session closes as a slow consumer; returns the replays to go on, if there is room now.
    mutating func report(transportBytes bytes: Int, bound: Int) -> [CheckedContinuation<Void, Never>] {
        transportBytes = bytes
        if bytes > bound {
            closed = .slowConsumer
            return []
        }
        return takeWaitersIfRoom(bound: bound)
    }

    /// The replays waiting for room, if there is room now; they are removed from the state.
    mutating func takeWaitersIfRoom(bound: Int) -> [CheckedContinuation<Void, Never>] {
        guard !roomWaiters.isEmpty, queue.payloadBytes + transportBytes <= bound / 2 else { return [] }
        defer { roomWaiters = [] }
        return roomWaiters
    }
}

/// Sessions that need draining after a dispatch: one task per event loop drains them all,
/// instead of one cross-thread wake-up per session.
struct WakeBatch {
    private var sessions: [Session] = []

    mutating func add(_ session: Session) { sessions.append(session) }

    func run() {
        guard !sessions.isEmpty else { return }
        // A broker has a handful of event loops (one per core): a list beats a dictionary.
        var byLoop: [(loop: any EventLoop, sessions: [Session])] = []
        for session in sessions {
            guard let loop = session.eventLoop else {
                session.drain(session)
                continue
            }
            if let i = byLoop.firstIndex(where: { $0.loop === loop }) {
                byLoop[i].sessions.append(session)
            } else {
                byLoop.append((loop, [session]))
            }
        }
        for group in byLoop {
            let sessions = group.sessions
            group.loop.execute {
                for session in sessions { session.drain(session) }
            }
        }
    }
}
