import Synchronization

/// The publishes of one connection that are still committing. The connection's reader goes on
/// reading while they commit (a client may pipeline publishes, and they then share commits),
/// and waits here before anything whose reply must come after theirs: replies go out in the
/// order the requests came in. Publishes complete in order (`Broker.publish(…completion:)`),
/// each sending its reply before it `end`s, so once none is in flight every earlier reply has
/// been sent.
///
/// The window bounds what one connection holds in memory: at most `capacity` publishes and
/// `byteCapacity` bytes of their messages (one larger message is let in alone); and its
/// publishes take their bytes from the broker-wide `budget` too.
///
/// Publishes begin one at a time: on the connection's task (`begin`, which may wait), or on its
/// event loop while that task is idle (`tryBegin`, which never waits); `end` comes from the
/// store's commit thread.
final class PublishWindow: Sendable {
    private struct State {
        var inFlight = 0
        var bytes = 0
        /// The reader, waiting for at most `count` publishes and `bytes` bytes in flight.
        var waiter: (count: Int, bytes: Int, continuation: CheckedContinuation<Void, Never>)?

        func within(count: Int, bytes: Int) -> Bool { inFlight <= count && self.bytes <= bytes }
    }

    let capacity: Int
    let byteCapacity: Int
    let budget: PublishBudget?
    private let state = Mutex(State())

    init(capacity: Int, byteCapacity: Int, budget: PublishBudget? = nil) {
        precondition(capacity >= 1 && byteCapacity >= 0)
        self.capacity = capacity
        self.byteCapacity = byteCapacity
        self.budget = budget
    }

    var inFlight: Int { state.withLock { $0.inFlight } }
    var bytesInFlight: Int { state.withLock { $0.bytes } }
    /// The reader is waiting (for room, or for the window to drain).
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// Counts a publish of a `bytes`-long message in flight, first waiting until there is room.
    func begin(bytes: Int) async {
        // Room for one more and its bytes. A message larger than the whole budget waits for
        // `bytes == 0`: an empty window, so it goes alone.
        await wait(count: capacity - 1, bytes: max(byteCapacity - bytes, 0))
        await budget?.acquire(bytes)
        state.withLock { s in
            s.inFlight += 1
            s.bytes += bytes
        }
    }

    /// Counts a publish of a `bytes`-long message in flight if the window and the budget have
    /// room for it now; false, changing nothing, when `begin` would have to wait.
    func tryBegin(bytes: Int) -> Bool {
        guard state.withLock({ $0.within(count: capacity - 1, bytes: max(byteCapacity - bytes, 0)) }) else { return false }
        // No other begin runs meanwhile, and `end` only makes room: the window still has it.
        if let budget, !budget.tryAcquire(bytes) { return false }
        state.withLock { s in
            s.inFlight += 1
            s.bytes += bytes
        }
        return true
    }

    /// The publish begun with `bytes` was answered.
    func end(bytes: Int) {
        budget?.release(bytes)
        let resume = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.inFlight -= 1
            s.bytes -= bytes
            precondition(s.inFlight >= 0 && s.bytes >= 0, "a publish ended twice")
            guard let waiter = s.waiter, s.within(count: waiter.count, bytes: waiter.bytes) else { return nil }
            s.waiter = nil
            return waiter.continuation
        }
        resume?.resume()
    }

    /// Returns once every publish begun so far has been answered.
    func drained() async {
        await wait(count: 0, bytes: 0)
    }

    private func wait(count: Int, bytes: Int) async {
        // The common case (nothing to wait for) takes the lock once and does not suspend.
        if state.withLock({ $0.within(count: count, bytes: bytes) }) { return }
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> Bool in
                precondition(s.waiter == nil, "one reader per connection")
                if s.within(count: count, bytes: bytes) { return true }
                s.waiter = (count, bytes, continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }
}
