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
        // Every dataset gets its change stream (`changeStreamsFor`, in Swift: the stream's
        // definition is derived from the dataset's).
        (4, "dataset change streams", []),
        (
            5, "controller operations and registry",
            [
                // The operations document (live configuration and commands) the leader writes.
                """
                CREATE TABLE controller_control (
                    id INT PRIMARY KEY CHECK (id = 1),
                    revision BIGINT NOT NULL,
                    document TEXT NOT NULL,
                    written_at TIMESTAMPTZ NOT NULL
                )
                """,
                "INSERT INTO controller_control VALUES (1, 0, '{}', now())",
                // Every controller, refreshed by itself; gone when it stops refreshing.
                """
                CREATE TABLE controller_members (
                    id TEXT PRIMARY KEY,
                    summary TEXT NOT NULL,
                    expires_at TIMESTAMPTZ NOT NULL
                )
                """,
            ]
        ),
        // The traceparent of a traced publish, NULL otherwise (no rewrite: a NULL column is free).
        (6, "event traces", ["ALTER TABLE events ADD COLUMN trace TEXT"]),
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
                if migration.version == 4 { try await addChangeStreams(connection, logger: logger) }
                try await connection.query(
                    "INSERT INTO tocsin_migrations (version, name) VALUES (\(migration.version), \(migration.name))", logger: logger)
            }
            logger.info("migrated the PostgreSQL store", metadata: ["version": "\(migration.version)", "migration": "\(migration.name)"])
        }
    }

    /// Datasets made before change streams get theirs, continuing from their version.
    private static func addChangeStreams(_ connection: PostgresConnection, logger: Logger) async throws {
        var datasets: [(String, String, Int64)] = []
        for try await row in try await connection.query("SELECT name, definition, version FROM datasets", logger: logger)
            .decode((String, String, Int64).self) { datasets.append(row) }
        for (name, text, version) in datasets {
            guard let definition = try? DatasetRules.definition(name: name, text: text) else { continue }
            try await putChangeStream(connection, of: definition, version: version, logger: logger)
        }
    }

    /// Creates `definition`'s change stream at `version` (its next event is `version + 1`), or
    /// gives the existing one the definition's fields and a new epoch (its seqs go on) and drops its events (a dataset is only
    /// redefined while empty, and its old changes would not read under the new fields).
    static func putChangeStream(_ db: PostgresConnection, of definition: DatasetDefinition, version: Int64, logger: Logger) async throws {
        let stream = definition.changeStream
        try await db.query(
            """
            INSERT INTO streams (name, definition, epoch, last_seq, first_seq, bytes, created_at)
            VALUES (\(stream.name), \(StoredDefinition.text(stream)), \(newEpoch()), \(version), \(version + 1), 0, \(WallClock.nowMillis()))
            ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, epoch = excluded.epoch, first_seq = streams.last_seq + 1, bytes = 0
            """, logger: logger)
        try await db.query("DELETE FROM events WHERE stream = \(stream.name)", logger: logger)
        try await db.query("DELETE FROM publish_keys WHERE stream = \(stream.name)", logger: logger)
    }
}
