import Foundation
public import Logging
import PostgresNIO
public import TocsinCore

/// The controllers' ledger in PostgreSQL (`ControllerLedger`): two one-row tables of the
/// store's schema (migration 2). `controller_leader` is the lease: who holds it, at which URL,
/// with which epoch, until when (on the database's clock, never a host's). `controller_registry`
/// is the broker list the leader writes every tick, as JSON.
public final class PostgresLedger: ControllerLedger {
    let connections: PostgresConnections
    let logger: Logger

    /// Connects and runs the store's migrations (as `PostgresStore.open` does).
    public static func open(location: PostgresLocation, logger: Logger = Logger(label: "tocsin.ledger")) async throws -> PostgresLedger {
        let connections = PostgresConnections(location: location, logger: logger)
        do {
            try await connections.run { connection in try await PostgresStore.migrate(connection, logger: logger) }
        } catch {
            connections.close()
            throw error
        }
        return PostgresLedger(connections: connections, logger: logger)
    }

    private init(connections: PostgresConnections, logger: Logger) {
        self.connections = connections
        self.logger = logger
    }

    public func close() async { connections.close() }

    public func claimLeadership(holder: String, url: String, lease: Duration) async throws -> LeadershipClaim {
        let seconds = Double(lease.milliseconds) / 1000
        let logger = logger
        // One statement: take or renew the row, or else read who holds it. The answer must come
        // within the lease, or it says nothing about now.
        return try await PostgresConnections.withDeadline(lease) { [connections] in
            try await connections.run { db in
                let rows = try await db.query(
                    """
                    WITH claimed AS (
                        UPDATE controller_leader
                        SET holder = \(holder), url = \(url),
                            epoch = CASE WHEN holder = \(holder) THEN epoch ELSE epoch + 1 END,
                            expires_at = clock_timestamp() + \(seconds) * interval '1 second'
                        WHERE id = 1 AND (holder = \(holder) OR expires_at < clock_timestamp())
                        RETURNING holder, url, epoch
                    )
                    SELECT holder, url, epoch, true FROM claimed
                    UNION ALL
                    SELECT holder, url, epoch, false FROM controller_leader WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM claimed)
                    """, logger: logger)
                for try await (h, u, epoch, won) in rows.decode((String?, String?, Int64, Bool).self) {
                    return LeadershipClaim(holder: h, url: u, epoch: epoch, won: won)
                }
                throw TocsinError(.internalError, "the store has no controller_leader row (migration 2 not applied?)")
            }
        }
    }

    public func saveRegistry(_ brokers: [BrokerSummary], holder: String, epoch: Int64) async throws -> Bool {
        let text = JSONValue.array(brokers.map(\.json)).serialized
        let logger = logger
        return try await connections.run { db in
            var written = false
            for try await _ in try await db.query(
                """
                UPDATE controller_registry SET epoch = \(epoch), brokers = \(text), written_at = clock_timestamp()
                WHERE id = 1 AND EXISTS (
                    SELECT 1 FROM controller_leader WHERE id = 1 AND holder = \(holder) AND epoch = \(epoch) AND expires_at > clock_timestamp())
                RETURNING 1
                """, logger: logger)
            { written = true }
            return written
        }
    }

    public func loadRegistry() async throws -> [BrokerSummary] {
        let logger = logger
        let text = try await connections.run { db in
            for try await text in try await db.query("SELECT brokers FROM controller_registry WHERE id = 1", logger: logger).decode(String.self) {
                return text
            }
            return "[]"
        }
        var brokers: [BrokerSummary] = []
        for b in try JSONValue.parse(text).arrayValue ?? [] { brokers.append(try BrokerSummary(json: b)) }
        return brokers
    }

    public func saveControl(_ document: String, revision: Int64, holder: String, epoch: Int64) async throws -> Bool {
        let logger = logger
        return try await connections.run { db in
            var written = false
            for try await _ in try await db.query(
                """
                UPDATE controller_control SET revision = \(revision), document = \(document), written_at = clock_timestamp()
                WHERE id = 1 AND EXISTS (
                    SELECT 1 FROM controller_leader WHERE id = 1 AND holder = \(holder) AND epoch = \(epoch) AND expires_at > clock_timestamp())
                RETURNING 1
                """, logger: logger)
            { written = true }
            return written
        }
    }

    public func loadControl(newerThan revision: Int64) async throws -> (document: String, revision: Int64)? {
        let logger = logger
        return try await connections.run { db in
            for try await (document, current) in try await db.query(
                "SELECT document, revision FROM controller_control WHERE id = 1 AND revision > \(revision)", logger: logger
            ).decode((String, Int64).self) {
                return (document, current)
            }
            return nil
        }
    }

    public func refreshController(_ me: ComponentSummary, lease: Duration) async throws {
        let seconds = Double(lease.milliseconds) / 1000
        let text = me.json.serialized
        let logger = logger
        try await connections.run { db in
            try await db.query(
                """
                INSERT INTO controller_members (id, summary, expires_at) VALUES (\(me.id), \(text), clock_timestamp() + \(seconds) * interval '1 second')
                ON CONFLICT (id) DO UPDATE SET summary = excluded.summary, expires_at = excluded.expires_at
                """, logger: logger)
            // Controllers that stopped an hour ago are forgotten.
            try await db.query("DELETE FROM controller_members WHERE expires_at < clock_timestamp() - interval '1 hour'", logger: logger)
        }
    }

    public func controllers() async throws -> [ComponentSummary] {
        let logger = logger
        let texts = try await connections.run { db in
            var texts: [String] = []
            for try await text in try await db.query(
                "SELECT summary FROM controller_members WHERE expires_at > clock_timestamp() ORDER BY id", logger: logger
            ).decode(String.self) { texts.append(text) }
            return texts
        }
        var list: [ComponentSummary] = []
        for text in texts { if let c = try? ComponentSummary(json: try JSONValue.parse(text)) { list.append(c) } }
        return list
    }
}
