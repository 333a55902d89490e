import Logging
import Synchronization
import TocsinCore

/// A frame waiting in a session's outbox.
enum OutFrame: Sendable {
    case text(String)
    /// A `notify` frame: the per-subscription prefix and the per-event suffix (see NotifyFrame).
    case notify(prefix: String, suffix: String)
}

/// One client connection: identity, its subscriptions, and a bounded outbox drained by a
/// single writer task, so producers (dispatchers, replays, replies) never wait on the socket.
///
/// Slow-consumer policy: when the outbox holds more than `maxQueuedFrames` frames the session
/// is marked overflowed; the writer sends `error {code: "slow_consumer"}` and closes the
/// connection. Nothing is lost: the client reconnects and resumes from its acknowledged position.
final class Session: Sendable {
    enum CloseReason: Sendable, Equatable {
        case slowConsumer
    }

    private struct State {
        var queue: [OutFrame] = []
        var waiter: CheckedContinuation<Void, Never>?
        var closed: CloseReason?
        var finished = false
        var client: String?
        /// Subscription id -> stream, for this session's attached subscriptions.
        var subscriptions: [String: String] = [:]
    }

    let id: String
    let logger: Logger
    private let maxQueuedFrames: Int
    private let state = Mutex(State())

    init(id: String, maxQueuedFrames: Int, logger: Logger) {
        self.id = id
        self.maxQueuedFrames = maxQueuedFrames
        self.logger = logger
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
        let (accepted, waiter): (Bool, CheckedContinuation<Void, Never>?) = state.withLock { s in
            guard s.closed == nil, !s.finished else { return (false, nil) }
            if s.queue.count >= maxQueuedFrames {
                s.closed = .slowConsumer
                let w = s.waiter
                s.waiter = nil
                return (false, w)
            }
            s.queue.append(frame)
            let w = s.waiter
            s.waiter = nil
            return (true, w)
        }
        waiter?.resume()
        return accepted
    }

    func send(_ message: ServerMessage) {
        send(.text(message.encoded))
    }

    /// Asks the writer to stop after what is queued (graceful) with a reason to report.
    func close(_ reason: CloseReason) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.closed == nil { s.closed = reason }
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// The connection is gone: drop everything and refuse further frames.
    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.finished = true
            s.queue.removeAll()
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    enum Next {
        case frames([OutFrame])
        case close(CloseReason)
        case finished
    }

    /// The writer's loop step: everything queued, or the reason to close once drained.
    func next() async -> Next {
        while true {
            let result: Next? = state.withLock { s in
                if s.finished { return .finished }
                if !s.queue.isEmpty && s.closed != .slowConsumer {
                    var taken: [OutFrame] = []
                    swap(&taken, &s.queue)
                    return .frames(taken)
                }
                if let reason = s.closed { return .close(reason) }
                return nil
            }
            if let result { return result }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if s.finished || !s.queue.isEmpty || s.closed != nil { return true }
                    s.waiter = c
                    return false
                }
                if ready { c.resume() }
            }
        }
    }
}
