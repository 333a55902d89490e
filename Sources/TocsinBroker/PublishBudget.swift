import Synchronization

/// The bytes of publish messages the whole broker holds while they commit, across every
/// connection's `PublishWindow`: past `capacity`, readers wait their turn (first come, first
/// served) until commits free enough. One message larger than the whole budget goes when
/// nothing else holds any of it. So pipelining clients, however many, cannot make the broker
/// hold more than about `capacity` of their messages at once.
///
/// A wait cannot be cancelled, on purpose: the commit thread settles every queued publish, and
/// each releases its bytes, so a waiter (even of a connection that has closed meanwhile) is let
/// in within the time the commits ahead of it take.
final class PublishBudget: Sendable {
    private struct Waiter {
        var bytes: Int
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var used = 0
        var waiters: [Waiter] = []

        func fits(_ bytes: Int, capacity: Int) -> Bool { used == 0 || used + bytes <= capacity }
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        self.capacity = max(capacity, 0)
    }

    var used: Int { state.withLock { $0.used } }
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Takes `bytes` of the budget, first waiting behind earlier waiters until they fit.
    func acquire(_ bytes: Int) async {
        let taken = state.withLock { s -> Bool in
            guard s.waiters.isEmpty, s.fits(bytes, capacity: capacity) else { return false }
            s.used += bytes
            return true
        }
        if taken { return }
        await withCheckedContinuation { continuation in
            let resume = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                s.waiters.append(Waiter(bytes: bytes, continuation: continuation))
                return admit(&s)  // a release may have come in between
            }
            for c in resume { c.resume() }
        }
    }

    func release(_ bytes: Int) {
        let resume = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.used -= bytes
            precondition(s.used >= 0, "released more than was acquired")
            return admit(&s)
        }
        for c in resume { c.resume() }
    }

    /// Takes the budget for the waiters at the front that fit, in order.
    private func admit(_ s: inout State) -> [CheckedContinuation<Void, Never>] {
        var admitted: [CheckedContinuation<Void, Never>] = []
        while let first = s.waiters.first, s.fits(first.bytes, capacity: capacity) {
            s.used += first.bytes
            admitted.append(first.continuation)
            s.waiters.removeFirst()
        }
        return admitted
    }
}
