import GRDB
import Logging
import Synchronization
import TocsinCore

/// Group commit for appends: while one transaction is being committed, new appends queue up and
/// all go into the next transaction together. One fsync then covers many publishers, and a
/// lone publisher still commits at once (no timer, no added latency).
///
/// Each request is all-or-nothing: it is checked (stream exists) before any of its rows is
/// written, and a failure of the transaction fails every request in it.
final class GroupCommitter: Sendable {
    private struct Request {
        var stream: String
        var events: [String]
        var continuation: CheckedContinuation<(epoch: String, seqs: [Int64]), any Error>
    }

    private struct State {
        var queue: [Request] = []
        var draining = false
    }

    /// Most events in one transaction, to bound commit latency under heavy load.
    static let maxEventsPerCommit = 20_000

    private let state = Mutex(State())
    private let pool: DatabasePool
    private let logger: Logger
    /// Told of each request's committed events, in commit order.
    private let onCommit: @Sendable (_ stream: String, _ epoch: String, _ events: [StoredEvent]) -> Void

    init(pool: DatabasePool, logger: Logger, onCommit: @escaping @Sendable (_ stream: String, _ epoch: String, _ events: [StoredEvent]) -> Void) {
        self.pool = pool
        self.logger = logger
        self.onCommit = onCommit
    }

    func append(stream: String, events: [String]) async throws -> (epoch: String, seqs: [Int64]) {
        try await withCheckedThrowingContinuation { continuation in
            let startDrain = state.withLock { s in
                s.queue.append(Request(stream: stream, events: events, continuation: continuation))
                if s.draining { return false }
                s.draining = true
                return true
            }
            if startDrain {
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while true {
            let batch: [Request] = state.withLock { s in
                var count = 0
                var take = 0
                while take < s.queue.count && (take == 0 || count + s.queue[take].events.count <= Self.maxEventsPerCommit) {
                    count += s.queue[take].events.count
                    take += 1
                }
                let batch = Array(s.queue.prefix(take))
                s.queue.removeFirst(take)
                if batch.isEmpty { s.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            await commit(batch)
        }
    }

    /// Commits `batch` in one transaction and settles every request. The change feed and the
    /// publishers hear of the commit from the writer's thread, as soon as it is durable, not
    /// after another hop back to the task that asked for it: a thread wake-up less between a
    /// publish and its delivery.
    private func commit(_ batch: [Request]) async {
        let now = TimeFormat.nowMillis()
        let onCommit = self.onCommit
        do {
            try await pool.writeWithoutTransaction { db in
                var outcomes: [Result<(epoch: String, seqs: [Int64]), TocsinError>] = []
                try db.inTransaction(.immediate) {
                    outcomes = []
                    let select = try db.cachedStatement(sql: "SELECT epoch, last_seq FROM streams WHERE name = ?")
                    let insert = try db.cachedStatement(sql: "INSERT INTO events (stream, seq, published_at, body) VALUES (?, ?, ?, ?)")
                    let update = try db.cachedStatement(sql: "UPDATE streams SET last_seq = ? WHERE name = ?")
                    for item in batch {
                        guard let row = try Row.fetchOne(select, arguments: [item.stream]) else {
                            outcomes.append(.failure(TocsinError(.unknownStream, "no stream named '\(item.stream)'")))
                            continue
                        }
                        let epoch: String = row[0]
                        var seq: Int64 = row[1]
                        var seqs: [Int64] = []
                        seqs.reserveCapacity(item.events.count)
                        for body in item.events {
                            seq += 1
                            try insert.execute(arguments: [item.stream, seq, now, body])
                            seqs.append(seq)
                        }
                        try update.execute(arguments: [seq, item.stream])
                        outcomes.append(.success((epoch, seqs)))
                    }
                    return .commit
                }
                // Committed (and synced). Nothing below throws, so no request is settled twice.
                for (request, outcome) in zip(batch, outcomes) {
                    if case .success(let r) = outcome {
                        onCommit(request.stream, r.epoch, zip(r.seqs, request.events).map { StoredEvent(seq: $0, publishedAtMillis: now, json: $1) })
                    }
                }
                for (request, outcome) in zip(batch, outcomes) {
                    switch outcome {
                    case .success(let r): request.continuation.resume(returning: r)
                    case .failure(let e): request.continuation.resume(throwing: e)
                    }
                }
            }
        } catch {
            logger.error("append transaction failed", metadata: ["error": "\(error)", "requests": "\(batch.count)"])
            for request in batch {
                request.continuation.resume(throwing: TocsinError(.internalError, "the store could not commit the events: \(error)"))
            }
        }
    }
}
