import GRDB
import TocsinCore

/// The database schema, as versioned migrations run when a store opens.
extension SQLiteStore {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE streams (
                        name TEXT PRIMARY KEY,
                        definition TEXT NOT NULL,
                        epoch TEXT NOT NULL,
                        last_seq INTEGER NOT NULL DEFAULT 0,
                        first_seq INTEGER NOT NULL DEFAULT 1,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE events (
                        stream TEXT NOT NULL,
                        seq INTEGER NOT NULL,
                        published_at INTEGER NOT NULL,
                        body TEXT NOT NULL,
                        PRIMARY KEY (stream, seq)
                    ) WITHOUT ROWID;
                    CREATE TABLE channels (
                        name TEXT PRIMARY KEY,
                        stream TEXT NOT NULL,
                        definition TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE subscriptions (
                        id TEXT PRIMARY KEY,
                        client TEXT NOT NULL,
                        channel TEXT NOT NULL,
                        params TEXT NOT NULL,
                        epoch TEXT NOT NULL,
                        acked_seq INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        UNIQUE (client, channel, params)
                    );
                    CREATE INDEX subscriptions_by_channel ON subscriptions (channel);
                    """)
        }
        m.registerMigration("v2: publish keys") { db in
            try db.execute(
                sql: """
                    CREATE TABLE publish_keys (
                        stream TEXT NOT NULL,
                        key TEXT NOT NULL,
                        epoch TEXT NOT NULL,
                        first_seq INTEGER NOT NULL,
                        count INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (stream, key)
                    ) WITHOUT ROWID;
                    CREATE INDEX publish_keys_by_age ON publish_keys (created_at);
                    """)
        }
        m.registerMigration("v2 datasets") { db in
            try db.execute(
                sql: """
                    CREATE TABLE datasets (
                        name TEXT PRIMARY KEY,
                        definition TEXT NOT NULL,
                        version INTEGER NOT NULL DEFAULT 0,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE dataset_records (
                        dataset TEXT NOT NULL,
                        key TEXT NOT NULL,
                        body TEXT NOT NULL,
                        PRIMARY KEY (dataset, key)
                    ) WITHOUT ROWID;
                    """)
        }
        m.registerMigration("v3 change streams") { db in
            // Datasets made before change streams get theirs, continuing from their version.
            for row in try Row.fetchAll(db, sql: "SELECT name, definition, version FROM datasets") {
                guard let definition = try? DatasetRules.definition(name: row["name"], text: row["definition"]) else { continue }
                try putChangeStream(db, of: definition, version: row["version"])
            }
        }
        m.registerMigration("v4 traces") { db in
            // The traceparent of a traced publish (NULL otherwise: one byte of the row's header).
            try db.execute(sql: "ALTER TABLE events ADD COLUMN trace TEXT")
        }
        return m
    }

    /// Creates `definition`'s change stream at `version` (its next event is `version + 1`), or
    /// gives the existing one the definition's fields and a new epoch (its seqs go on) and drops its events (a dataset is only
    /// redefined while empty, and its old changes would not read under the new fields).
    static func putChangeStream(_ db: Database, of definition: DatasetDefinition, version: Int64) throws {
        let stream = definition.changeStream
        try db.execute(
            sql: """
                INSERT INTO streams (name, definition, epoch, last_seq, first_seq, created_at) VALUES (?1, ?2, ?3, ?4, ?4 + 1, ?5)
                ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, epoch = excluded.epoch, first_seq = streams.last_seq + 1
                """,
            arguments: [stream.name, StoredDefinition.text(stream), newEpoch(), version, WallClock.nowMillis()])
        try deleteHistory(db, stream: stream.name)
    }
}
