import Logging
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
/// Slow-consumer policy: more than `maxQueuedFrames` undrained frames, or the transport
/// reporting too many bytes it could not write yet (`overflowed()`), closes the session as a
/// slow consumer: the transport sends `error {code: "slow_consumer"}` and closes the
/// connection. Nothing is lost: the client reconnects and resumes from its acknowledged position.
final class Session: Sendable {
    enum CloseReason: Sendable, Equatable {
        case slowConsumer
    }

    private struct State {
        var queue: [OutFrame] = []
        var drainScheduled = false
        var closed: CloseReason?
        var finished = false
        var client: String?
        /// Subscription id -> stream, for this session's attached subscriptions.
        var subscriptions: [String: String] = [:]
    }

    let id: String
    let logger: Logger
    private let maxQueuedFrames: Int
    private let onReady: @Sendable (Session) -> Void
    private let state = Mutex(State())

    init(id: String, maxQueuedFrames: Int, logger: Logger, onReady: @escaping @Sendable (Session) -> Void) {
        self.id = id
        self.maxQueuedFrames = maxQueuedFrames
        self.logger = logger
        self.onReady = onReady
    }

    var client: String? { state.withLock { $0.client } }

    func identify(as client: String) -> Bool {
        state.withLock { s in
            guard s.client == nil else { return false }
            s.client = client
            return true
        }
    }

    func addSubscription(_ id: String, stream: String) { state.withLock { $0.subscriptions[id] = stream } }
    func removeSubscription(_ id: String) -> String? { state.withLock { $0.subscriptions.removeValue(forKey: id) } }
    func stream(ofSubscription id: String) -> String? { state.withLock { $0.subscriptions[id] } }
    var subscriptions: [String: String] { state.withLock { $0.subscriptions } }

    /// Queues a frame. Returns false when the session is closed or just overflowed.
    @discardableResult
    func send(_ frame: OutFrame) -> Bool {
        let (accepted, wake): (Bool, Bool) = state.withLock { s in
            guard s.closed == nil, !s.finished else { return (false, false) }
            if s.queue.count >= maxQueuedFrames {
                s.closed = .slowConsumer
            } else {
                s.queue.append(frame)
            }
            let wake = !s.drainScheduled
            s.drainScheduled = true
            return (s.closed == nil, wake)
        }
        if wake { onReady(self) }
        return accepted
    }

    func send(_ message: ServerMessage) {
        send(.text(message.encoded))
    }

    /// The transport could not keep up (too many bytes waiting for the socket).
    func overflowed() {
        let wake = state.withLock { s -> Bool in
            guard s.closed == nil, !s.finished else { return false }
            s.closed = .slowConsumer
            let wake = !s.drainScheduled
            s.drainScheduled = true
            return wake
        }
        if wake { onReady(self) }
    }

    /// The connection is gone: drop everything and refuse further frames.
    func finish() {
        state.withLock { s in
            s.finished = true
            s.queue.removeAll()
        }
    }

    enum Next: Equatable {
        /// Write these, then call `take` again.
        case frames([OutFrame])
        /// Nothing queued; the next `send` calls `onReady` again.
        case idle
        case close(CloseReason)
        case finished
    }

    /// The drainer's step.
    func take() -> Next {
        state.withLock { s in
            if s.finished {
                s.drainScheduled = false
                return .finished
            }
            if let reason = s.closed {
                s.queue.removeAll()
                s.drainScheduled = false
                s.finished = true
                return .close(reason)
            }
            if s.queue.isEmpty {
                s.drainScheduled = false
                return .idle
            }
            var taken: [OutFrame] = []
            swap(&taken, &s.queue)
            return .frames(taken)
        }
    }
}

extension OutFrame: Equatable {}
