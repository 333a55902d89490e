public import Logging

/// Which store a process runs on, chosen at the edge (the command line, a test's setup) and
/// opened there; everything past it sees `any Store`.
public enum StoreConfiguration: Sendable {
    /// The embedded store: one SQLite file, which brokers on one host may share.
    case sqlite(SQLiteStore.Configuration)
    /// PostgreSQL, which brokers on many hosts may share.
    case postgres(PostgresStore.Configuration)

    /// Opens the store (creating and migrating it if needed).
    public func open(logger: Logger) async throws -> any Store {
        switch self {
        case .sqlite(let configuration): try SQLiteStore(configuration: configuration, logger: logger)
        case .postgres(let configuration): try await PostgresStore.open(configuration, logger: logger)
        }
    }
}
