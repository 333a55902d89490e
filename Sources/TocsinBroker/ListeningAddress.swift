import Synchronization

/// The port the server listens on: set once when it binds, awaited by whoever advertises it
/// (the cluster member's registration). Nobody polls: `port()` suspends until `set` is called
/// or the waiting task is cancelled.
final class ListeningAddress: Sendable {
    private struct State {
        var port: Int?
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Int?, Never>] = [:]
        /// Waiters cancelled before they were registered.
        var cancelled: Set<Int> = []
    }

    private let state = Mutex(State())

    /// The port, once known.
    var current: Int? { state.withLock { $0.port } }

    /// Records the bound port and resumes everyone waiting for it. Only the first call counts.
    func set(_ port: Int) {
        let waiters = state.withLock { s -> [CheckedContinuation<Int?, Never>] in
            guard s.port == nil else { return [] }
            s.port = port
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }

    /// The port, once the server listens; nil if the task is cancelled first.
    func port() async -> Int? {
        let id = state.withLock { s in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Int?, Never>) in
                let answer = state.withLock { s -> Int?? in
                    if let port = s.port { return .some(port) }
                    if s.cancelled.remove(id) != nil { return .some(nil) }
                    s.waiters[id] = waiter
                    return nil
                }
                if let answer { waiter.resume(returning: answer) }
            }
        } onCancel: {
            let waiter = state.withLock { s in
                guard let waiter = s.waiters.removeValue(forKey: id) else {
                    if s.port == nil { s.cancelled.insert(id) }
                    return nil as CheckedContinuation<Int?, Never>?
                }
                return waiter
            }
            waiter?.resume(returning: nil)
        }
    }
}
