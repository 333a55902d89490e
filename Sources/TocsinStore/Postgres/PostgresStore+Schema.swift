import Logging
import PostgresNIO
import TocsinCore

/// The database schema, as versioned migrations run when a store opens. Several processes may
/// open a fresh database at once: each takes a session advisory lock first, so one migrates and
/// the others then find the migrations applied. A database migrated by a newer Tocsin (a
/// version this one does not know) is refused rather than written to.
extension PostgresStore {
    /// The advisory lock key that serializes migrations ("tocsin" in ASCII).
    static let migrationLock: Int64 = 0x746f_6373_696e

    static let migrations: [(version: Int, name: String, sql: [String])] = [
        (
            1, "streams, events, channels, subscriptions, publish keys",
            [
                """
                CREATE TABLE streams (
                    name TEXT PRIMARY KEY,
                    definition TEXT NOT NULL,
                    epoch TEXT NOT NULL,
                    last_seq BIGINT NOT NULL DEFAULT 0,
                    first_seq BIGINT NOT NULL DEFAULT 1,
                    bytes BIGINT NOT NULL DEFAULT 0,
                    created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE events (
                    stream TEXT NOT NULL,
                    seq BIGINT NOT NULL,
                    published_at BIGINT NOT NULL,
                    body TEXT NOT NULL,
                    PRIMARY KEY (stream, seq)
                )
                """,
                """
                CREATE TABLE channels (
                    name TEXT PRIMARY KEY,
                    stream TEXT NOT NULL,
                    definition TEXT NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE subscriptions (
                    id TEXT PRIMARY KEY,
                    client TEXT NOT NULL,
                    channel TEXT NOT NULL,
                    params TEXT NOT NULL,
                    epoch TEXT NOT NULL,
                    acked_seq BIGINT NOT NULL,
                    created_at BIGINT NOT NULL,
                    UNIQUE (client, channel, params)
                )
                """,
                "CREATE INDEX subscriptions_by_channel ON subscriptions (channel)",
                """
                CREATE TABLE publish_keys (
                    stream TEXT NOT NULL,
                    key TEXT NOT NULL,
                    epoch TEXT NOT NULL,
                    first_seq BIGINT NOT NULL,
                    count BIGINT NOT NULL,
                    created_at BIGINT NOT NULL,
                    PRIMARY KEY (stream, key)
                )
                """,
                "CREATE INDEX publish_keys_by_age ON publish_keys (created_at)",
                // One row: bumped with every definition change, so pollers notice what a lost
                // notification did not tell them.
                "CREATE TABLE tocsin_meta (id INT PRIMARY KEY CHECK (id = 1), catalog_version BIGINT NOT NULL)",
                "INSERT INTO tocsin_meta VALUES (1, 0)",
            ]
        ),
        (
            2, "controller leader lease and broker registry",
            [
                // The leadership lease (PostgresLedger): times are the database's own.
                """
                CREATE TABLE controller_leader (
                    id INT PRIMARY KEY CHECK (id = 1),
                    holder TEXT,
                    url TEXT,
                    epoch BIGINT NOT NULL,
                    expires_at TIMESTAMPTZ NOT NULL
                )
                """,
                "INSERT INTO controller_leader VALUES (1, NULL, NULL, 0, '-infinity')",
                // The live brokers as the leader last wrote them (a JSON array of broker objects).
                """
                CREATE TABLE controller_registry (
                    id INT PRIMARY KEY CHECK (id = 1),
                    epoch BIGINT NOT NULL,
                    brokers TEXT NOT NULL,
                    written_at TIMESTAMPTZ NOT NULL
                )
                """,
                "INSERT INTO controller_registry VALUES (1, 0, '[]', now())",
            ]
        ),
        (
            3, "datasets",
            [
                """
                CREATE TABLE datasets (
                    name TEXT PRIMARY KEY,
                    definition TEXT NOT NULL,
                    version BIGINT NOT NULL DEFAULT 0,
                    created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE dataset_records (
                    dataset TEXT NOT NULL,
                    key TEXT COLLATE "C" NOT NULL,
                    body TEXT NOT NULL,
                    PRIMARY KEY (dataset, key)
                )
                """,
            ]
        ),
    ]

    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("SELECT pg_advisory_lock(\(migrationLock))", logger: logger)
        do {
            try await applyMigrations(connection, logger: logger)
            try await connection.query("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
        } catch {
            _ = try? await connection.query("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
            throw error
        }
    }

    private static func applyMigrations(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            "CREATE TABLE IF NOT EXISTS tocsin_migrations (version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            logger: logger)
        var applied: Set<Int> = []
        for try await version in try await connection.query("SELECT version FROM tocsin_migrations", logger: logger).decode(Int.self) {
            applied.insert(version)
        }
        let known = Set(migrations.map(\.version))
        if let newer = applied.subtracting(known).max() {
            throw TocsinError(
                .internalError,
                "the database was migrated by a newer Tocsin (schema version \(newer); this one knows up to \(known.max() ?? 0)): upgrade this process")
        }
        for migration in migrations where !applied.contains(migration.version) {
            try await inTransaction(connection, logger: logger) { connection in
                for statement in migration.sql { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await connection.query(
                    "INSERT INTO tocsin_migrations (version, name) VALUES (\(migration.version), \(migration.name))", logger: logger)
            }
            logger.info("migrated the PostgreSQL store", metadata: ["version": "\(migration.version)", "migration": "\(migration.name)"])
        }
    }
}
