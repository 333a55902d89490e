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
    let capacity: Int
    private let queue: Mutex<BudgetQueue<CheckedContinuation<Void, Never>>>

    init(capacity: Int) {
        self.capacity = max(capacity, 0)
        self.queue = Mutex(BudgetQueue(capacity: max(capacity, 0)))
    }

    var used: Int { queue.withLock { $0.used } }
    var waiting: Int { queue.withLock { $0.waiting.count } }

    /// Takes `bytes` of the budget, first waiting behind earlier waiters until they fit.
    func acquire(_ bytes: Int) async {
        // The common case (room, nobody waiting) takes the lock once and does not suspend.
        if tryAcquire(bytes) { return }
        await withCheckedContinuation { continuation in
            // A release may have come in since: then it is admitted at once.
            if queue.withLock({ $0.request(bytes, continuation) }) { continuation.resume() }
        }
    }

    /// Takes `bytes` of the budget if they fit now and nobody waits; false, taking nothing, otherwise.
    func tryAcquire(_ bytes: Int) -> Bool {
        queue.withLock { $0.take(bytes) }
    }

    func release(_ bytes: Int) {
        for continuation in queue.withLock({ $0.release(bytes) }) { continuation.resume() }
    }
}

/// A `PublishBudget`'s bookkeeping, apart from the waiting itself: how much is held, and who
/// waits for how much, in arrival order. A request is admitted at once only if nobody waits
/// and it fits; a release admits the waiters at the front that fit, in order. "Fits" means the
/// bytes stay within `capacity`, or nothing is held (so one request larger than the whole
/// budget goes alone).
struct BudgetQueue<Waiter> {
    let capacity: Int
    private(set) var used = 0
    private(set) var waiting: [(bytes: Int, waiter: Waiter)] = []

    init(capacity: Int) {
        self.capacity = capacity
    }

    func fits(_ bytes: Int) -> Bool { used == 0 || used + bytes <= capacity }

    /// Takes `bytes` if nobody waits and they fit; false (and nothing changes) otherwise.
    mutating func take(_ bytes: Int) -> Bool {
        guard waiting.isEmpty, fits(bytes) else { return false }
        used += bytes
        return true
    }

    /// Takes `bytes` for `waiter` now (true), or queues it behind the others (false).
    mutating func request(_ bytes: Int, _ waiter: Waiter) -> Bool {
        if take(bytes) { return true }
        waiting.append((bytes, waiter))
        return false
    }

    /// Gives back `bytes`; returns the waiters now admitted, in the order they came.
    mutating func release(_ bytes: Int) -> [Waiter] {
        used -= bytes
        precondition(used >= 0, "released more than was taken")
        var admitted: [Waiter] = []
        while let first = waiting.first, fits(first.bytes) {
            used += first.bytes
            admitted.append(first.waiter)
            waiting.removeFirst()
        }
        return admitted
    }
}
