import GRDB
import TocsinCore

/// Retention: events past their stream's bounds, and publish keys past their window.
extension SQLiteStore {
    public func enforceRetention(nowMillis: Int64) async throws -> Int {
        let keysBefore = nowMillis - publishKeyWindowMillis
        return try await write { db in
            var deleted = 0
            for info in try Self.fetchStreams(db, unreadable: self.reportUnreadable) {
                let retention = info.definition.retention
                // Bounded when defined (`Retention.maxAgeSecondsLimit`); guarded all the same for
                // definitions stored under older rules: an age beyond the clock's reach deletes nothing.
                if let maxAge = retention.maxAgeSeconds, maxAge > 0 {
                    let (ageMillis, tooLong) = maxAge.multipliedReportingOverflow(by: 1000)
                    let (before, beforeAll) = nowMillis.subtractingReportingOverflow(ageMillis)
                    if !tooLong && !beforeAll {
                        try db.execute(
                            sql: "DELETE FROM events WHERE stream = ? AND published_at < ?", arguments: [info.name, before])
                        deleted += db.changesCount
                    }
                }
                if let maxEvents = retention.maxEvents, maxEvents > 0 {
                    try db.execute(
                        sql: "DELETE FROM events WHERE stream = ? AND seq <= ?", arguments: [info.name, info.lastSeq - maxEvents])
                    deleted += db.changesCount
                }
                let first = try Int64.fetchOne(db, sql: "SELECT MIN(seq) FROM events WHERE stream = ?", arguments: [info.name])
                try db.execute(
                    sql: "UPDATE streams SET first_seq = ? WHERE name = ?", arguments: [first ?? info.lastSeq + 1, info.name])
            }
            try db.execute(sql: "DELETE FROM publish_keys WHERE created_at < ?", arguments: [keysBefore])
            return deleted
        }
    }
}
