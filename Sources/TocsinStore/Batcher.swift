import Synchronization

/// Requests that arrive while a batch is being handled wait, and are handled together in the
/// next one: a group commit for small writes that many clients make at once (new durable
/// subscriptions after a broker restarts or fails over).
///
/// One batch at a time: the first request starts a task that hands the queue, at most
/// `maxBatch` requests at a time, to `handle` until it finds the queue empty. `handle` answers
/// each request of a batch, in order; callers are resumed after it returns, outside the lock.
final class Batcher<Request: Sendable, Response: Sendable>: Sendable {
    /// Answers one batch: one result per request, in the batch's order.
    typealias Handle = @Sendable (_ batch: [Request]) async -> [Result<Response, any Error>]

    private struct Waiting: Sendable {
        let request: Request
        let continuation: CheckedContinuation<Response, any Error>
    }

    private struct State: Sendable {
        var queue: [Waiting] = []
        /// A task is handling batches; it ends when it finds the queue empty.
        var draining = false
        /// Requests in the batch being handled.
        var handling = 0
    }

    let maxBatch: Int
    private let handle: Handle
    private let state = Mutex(State())
    /// Batches handled (tests).
    let batches = Atomic<Int>(0)

    init(maxBatch: Int, handle: @escaping Handle) {
        precondition(maxBatch > 0)
        self.maxBatch = maxBatch
        self.handle = handle
    }

    /// Requests waiting for the next batch (not counting those being handled).
    var queued: Int { state.withLock { $0.queue.count } }
    /// Requests in the batch being handled (tests).
    var handling: Int { state.withLock { $0.handling } }

    /// `request`'s answer, once the batch it went into has been handled.
    func submit(_ request: Request) async throws -> Response {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { s -> Bool in
                s.queue.append(Waiting(request: request, continuation: continuation))
                guard !s.draining else { return false }
                s.draining = true
                return true
            }
            if start { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { s -> [Waiting] in
                s.handling = 0
                guard !s.queue.isEmpty else {
                    s.draining = false
                    return []
                }
                let take = min(s.queue.count, maxBatch)
                let batch = Array(s.queue.prefix(take))
                s.queue.removeFirst(take)
                s.handling = take
                return batch
            }
            guard !batch.isEmpty else { return }
            let results = await handle(batch.map(\.request))
            precondition(results.count == batch.count, "a batch of \(batch.count) got \(results.count) answers")
            batches.add(1, ordering: .relaxed)
            for (waiting, result) in zip(batch, results) { waiting.continuation.resume(with: result) }
        }
    }
}
