import GRDB
import TocsinCore

/// Events: appends go through the group committer; reads straight to the pool.
extension SQLiteStore {
    public func append(stream: String, events: [String], key: String?, trace: String?) async throws -> Appended {
        try await committer.append(stream: stream, events: events, key: key, trace: trace)
    }

    public func append(
        stream: String, events: [String], key: String?, trace: String?, completion: @escaping @Sendable (Result<Appended, any Error>) -> Void
    ) {
        committer.append(stream: stream, events: events, key: key, trace: trace, completion: completion)
    }

    public func readEvents(stream: String, after: Int64, limit: Int) async throws -> [StoredEvent] {
        try await pool.read { db in
            try Row.fetchAll(
                db, cachedSQL: "SELECT seq, published_at, body, trace FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                arguments: [stream, after, limit]
            ).map { row in StoredEvent(seq: row[0], publishedAtMillis: row[1], json: row[2], trace: row[3]) }
        }
    }
}
