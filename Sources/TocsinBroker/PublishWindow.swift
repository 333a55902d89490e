import Synchronization

/// The publishes of one connection that are still committing. The connection's reader goes on
/// reading while they commit (a client may pipeline publishes, and they then share commits),
/// and waits here before anything whose reply must come after theirs: replies go out in the
/// order the requests came in. Publishes complete in order (`Broker.publish(…completion:)`),
/// each sending its reply before it `end`s, so once none is in flight every earlier reply has
/// been sent.
///
/// One reader waits at a time (the connection's reading task); `end` comes from the store's
/// commit thread.
final class PublishWindow: Sendable {
    private struct State {
        var inFlight = 0
        /// The reader, waiting for `inFlight` to fall to `limit`.
        var waiter: (limit: Int, continuation: CheckedContinuation<Void, Never>)?
    }

    /// Most publishes in flight; `begin` waits for room beyond it.
    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        precondition(capacity >= 1)
        self.capacity = capacity
    }

    var inFlight: Int { state.withLock { $0.inFlight } }
    /// The reader is waiting (for room, or for the window to drain).
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// Counts one more publish in flight, first waiting until there is room for it.
    func begin() async {
        await wait(untilAtMost: capacity - 1)
        state.withLock { $0.inFlight += 1 }
    }

    /// One publish was answered.
    func end() {
        let resume = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.inFlight -= 1
            guard let waiter = s.waiter, s.inFlight <= waiter.limit else { return nil }
            s.waiter = nil
            return waiter.continuation
        }
        resume?.resume()
    }

    /// Returns once every publish begun so far has been answered.
    func drained() async {
        await wait(untilAtMost: 0)
    }

    private func wait(untilAtMost limit: Int) async {
        // The common case (nothing to wait for) takes the lock once and does not suspend.
        if state.withLock({ $0.inFlight <= limit }) { return }
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> Bool in
                precondition(s.waiter == nil, "one reader per connection")
                if s.inFlight <= limit { return true }
                s.waiter = (limit, continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }
}
