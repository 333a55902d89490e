import GRDB
import Synchronization
import TocsinCore

/// Small writes that arrive together share one transaction, and so one sync: a group commit
/// for writes other than appends (those have `GroupCommitter`). Each runs in a savepoint of its
/// own, so one that throws rolls back alone and the others commit with the transaction; each
/// caller learns its outcome only once that transaction is durable (or failed, then all fail).
///
/// Used for durable subscriptions being created: one transaction each cost a sync apiece and
/// held a broker to ~1,000 new subscribers a second, so in a reconnect storm the subscribes
/// piled up waiting (docs/performance.md, "Memory per connection").
final class WriteBatcher: Sendable {
    /// One queued write. `run` is called inside the batch's transaction, keeps the write's own
    /// outcome and returns its error, if any; `finish` then hands the outcome over. Both on the
    /// draining task, one after the other.
    private final class Item: Sendable {
        let run: @Sendable (Database) -> (any Error)?
        let finish: @Sendable (_ committed: Result<Void, any Error>) -> Void

        init(run: @escaping @Sendable (Database) -> (any Error)?, finish: @escaping @Sendable (Result<Void, any Error>) -> Void) {
            self.run = run
            self.finish = finish
        }
    }

    /// A write's outcome, set inside the transaction and read after it (the draining task only).
    private final class Outcome<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
    }

    private struct State {
        var queue: [Item] = []
        /// A task is committing batches; it ends when it finds the queue empty.
        var draining = false
        /// Writes in the transaction being committed.
        var committing = 0
    }

    /// Most writes in one transaction, to bound how long one holds the writer.
    static let maxPerTransaction = 1_000

    private let pool: DatabasePool
    private let state = Mutex(State())
    /// Transactions committed (tests).
    let commits = Atomic<Int>(0)

    init(pool: DatabasePool) {
        self.pool = pool
    }

    /// Writes waiting for the next transaction (not counting those being committed).
    var queued: Int { state.withLock { $0.queue.count } }
    /// Writes in the transaction being committed (tests).
    var committing: Int { state.withLock { $0.committing } }

    /// Runs `body` in a savepoint of the next IMMEDIATE transaction, with whatever else is
    /// queued, and returns its result once the transaction committed.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let outcome = Outcome<T>()
            let item = Item(
                run: { db in
                    do {
                        var value: T?
                        try db.inSavepoint {
                            value = try body(db)
                            return .commit
                        }
                        outcome.result = .success(value!)
                        return nil
                    } catch {
                        outcome.result = .failure(error)
                        return error
                    }
                },
                finish: { committed in
                    switch committed {
                    case .success: continuation.resume(with: outcome.result!)
                    case .failure(let error): continuation.resume(throwing: error)
                    }
                })
            let start = state.withLock { s -> Bool in
                s.queue.append(item)
                guard !s.draining else { return false }
                s.draining = true
                return true
            }
            if start { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { s -> [Item] in
                s.committing = 0
                guard !s.queue.isEmpty else {
                    s.draining = false
                    return []
                }
                let take = min(s.queue.count, Self.maxPerTransaction)
                let batch = Array(s.queue.prefix(take))
                s.queue.removeFirst(take)
                s.committing = take
                return batch
            }
            guard !batch.isEmpty else { return }
            let committed: Result<Void, any Error>
            do {
                try await pool.writeWithoutTransaction { db in
                    try db.inTransaction(.immediate) {
                        for item in batch {
                            let error = item.run(db)
                            // Some errors (a full disk among them) make SQLite roll back the whole
                            // transaction: then nothing of the batch is stored, and all fail.
                            guard db.isInsideTransaction else {
                                throw error ?? TocsinError(.internalError, "SQLite ended the transaction of a batch of writes before its commit; nothing of it was stored")
                            }
                        }
                        return .commit
                    }
                }
                commits.add(1, ordering: .relaxed)
                committed = .success(())
            } catch {
                committed = .failure(error)
            }
            for item in batch { item.finish(committed) }
        }
    }
}
