import GRDB
import TocsinCore

/// Small SQLite writes that arrive together share one transaction, and so one sync: a group
/// commit for writes other than appends (those have `GroupCommitter`). Each runs in a savepoint
/// of its own, so one that throws rolls back alone and the others commit with the transaction;
/// each caller learns its outcome only once that transaction is durable (or failed, then all fail).
///
/// Used for durable subscriptions being created: one transaction each cost a sync apiece and
/// held a broker to ~1,000 new subscribers a second, so in a reconnect storm the subscribes
/// piled up waiting (docs/performance.md, "Memory per connection").
final class WriteBatcher: Sendable {
    /// One queued write: runs inside the batch's transaction, keeps its own outcome (in the
    /// caller's `Outcome`) and returns its error, if any.
    private typealias Item = @Sendable (Database) -> (any Error)?

    /// A write's outcome, set inside the transaction and read by its caller after the commit.
    private final class Outcome<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
    }

    /// Most writes in one transaction, to bound how long one holds the writer.
    static let maxPerTransaction = 1_000

    private let batcher: Batcher<Item, Void>

    init(pool: DatabasePool) {
        batcher = Batcher(maxBatch: Self.maxPerTransaction) { items in await Self.commit(items, pool: pool) }
    }

    /// Writes waiting for the next transaction (not counting those being committed).
    var queued: Int { batcher.queued }
    /// Writes in the transaction being committed (tests).
    var committing: Int { batcher.handling }
    /// Transactions committed or tried (tests).
    var transactions: Int { batcher.batches.load(ordering: .relaxed) }

    /// Runs `body` in a savepoint of the next IMMEDIATE transaction, with whatever else is
    /// queued, and returns its result once the transaction committed.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let outcome = Outcome<T>()
        try await batcher.submit { db in
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
        }
        return try outcome.result!.get()
    }

    /// One transaction for `items`: every caller's own outcome once it committed, or the
    /// transaction's error for all.
    private static func commit(_ items: [Item], pool: DatabasePool) async -> [Result<Void, any Error>] {
        do {
            try await pool.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    for item in items {
                        let error = item(db)
                        // Some errors (a full disk among them) make SQLite roll back the whole
                        // transaction: then nothing of the batch is stored, and all fail.
                        guard db.isInsideTransaction else {
                            throw error ?? TocsinError(.internalError, "SQLite ended the transaction of a batch of writes before its commit; nothing of it was stored")
                        }
                    }
                    return .commit
                }
            }
            return Array(repeating: .success(()), count: items.count)
        } catch {
            return Array(repeating: .failure(error), count: items.count)
        }
    }
}
