import Logging
import NIOSSL
import PostgresNIO
import Synchronization
import TocsinCore

/// The store's connections: a postgres-nio pool to the server that takes writes, a deadline on
/// every operation, and, with several hosts, finding the new primary after a failover.
///
/// The pool reconnects on its own after a restart. When an operation finds the database out of
/// reach and the location names several hosts, one probe at a time asks each host in turn
/// whether it accepts writes (`pg_is_in_recovery()`), and the pool is replaced by one to the
/// first that does; operations meanwhile fail with `store_unavailable`.
final class PostgresConnections: Sendable {
    private struct Current {
        var client: PostgresClient
        var runner: Task<Void, Never>
        var host: PostgresLocation.Host
    }

    private struct State {
        var current: Current?
        var closed = false
        var probing = false
    }

    let location: PostgresLocation
    private let logger: Logger
    private let state = Mutex(State())
    /// Searches for a host that takes writes, started (tests).
    let probes = Atomic<Int>(0)
    /// Connections lent right now (to operations, and to a LISTEN).
    private let inUse = Atomic<Int>(0)
    /// When an operation last got its answer from the database.
    private let lastAnswer = Mutex<ContinuousClock.Instant?>(nil)

    init(location: PostgresLocation, logger: Logger) {
        self.location = location
        self.logger = logger
        let current = Self.start(location: location, host: location.hosts[0], logger: logger)
        state.withLock { $0.current = current }
    }

    /// The host the pool connects to now.
    var host: PostgresLocation.Host? { state.withLock { $0.current?.host } }

    private static func start(location: PostgresLocation, host: PostgresLocation.Host, logger: Logger) -> Current {
        var config = PostgresClient.Configuration(
            host: host.name, port: host.port, username: location.user, password: location.password, database: location.database,
            tls: location.requireTLS ? .require(.makeClientConfiguration()) : .disable)
        config.options.maximumConnections = location.poolSize
        config.options.minimumConnections = min(2, location.poolSize)
        config.options.connectTimeout = location.operationTimeout
        config.options.keepAliveBehavior = .init(frequency: .seconds(10))
        // The pool logs every failed reconnect at info; the store reports outages itself.
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let client = PostgresClient(configuration: config, backgroundLogger: quiet)
        let runner = Task { await client.run() }
        return Current(client: client, runner: runner, host: host)
    }

    /// Closes the pool; operations after this fail with `store_unavailable`.
    func close() {
        let current = state.withLock { s -> Current? in
            s.closed = true
            defer { s.current = nil }
            return s.current
        }
        current?.runner.cancel()
    }

    /// Runs `body` on a pooled connection, within the operation timeout.
    func run<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        guard let client = state.withLock({ $0.current?.client }) else { throw TocsinError.storeUnavailable("the store is closed") }
        // An operation that timed out waiting for a connection while every connection was lent
        // to others met a busy pool, not a database out of reach: both are retryable, but an
        // operator fixes them differently, and a busy pool is no reason to look for another host.
        let lent = Atomic<Bool>(false)
        let busy = Atomic<Bool>(false)
        do {
            let (timeout, poolSize) = (location.operationTimeout, location.poolSize)
            return try await Self.withDeadline(
                timeout,
                timedOut: {
                    guard !lent.load(ordering: .relaxed), self.inUse.load(ordering: .relaxed) >= poolSize else {
                        return TocsinError.storeUnavailable("no answer within \(timeout)")
                    }
                    busy.store(true, ordering: .relaxed)
                    return TocsinError.storeBusy(poolSize: poolSize, timeout: timeout)
                }
            ) {
                try await client.withConnection { connection in
                    lent.store(true, ordering: .relaxed)
                    self.inUse.add(1, ordering: .relaxed)
                    defer { self.inUse.subtract(1, ordering: .relaxed) }
                    let value = try await body(connection)
                    self.lastAnswer.withLock { $0 = .now }
                    return value
                }
            }
        } catch {
            let mapped = TocsinError.fromPostgres(error)
            if (mapped as? TocsinError)?.code == .storeUnavailable, !busy.load(ordering: .relaxed) { findWritableHost() }
            throw mapped
        }
    }

    /// Every connection is lent, and the database answered one of them within the operation
    /// timeout: the broker is busy, the database is up.
    var busyButAnswering: Bool {
        Self.busyButAnswering(
            inUse: inUse.load(ordering: .relaxed), poolSize: location.poolSize, lastAnswer: lastAnswer.withLock { $0 }, now: .now,
            within: location.operationTimeout)
    }

    static func busyButAnswering(inUse: Int, poolSize: Int, lastAnswer: ContinuousClock.Instant?, now: ContinuousClock.Instant, within: Duration) -> Bool {
        guard inUse >= poolSize, let lastAnswer else { return false }
        return now - lastAnswer <= within
    }

    /// Listens on `channel` on a pooled connection of its own until `consume` returns or the
    /// connection fails (no deadline: it is meant to last).
    func listen(channel: String, consume: @escaping @Sendable (PostgresNotificationSequence) async throws -> Void) async throws {
        guard let client = state.withLock({ $0.current?.client }) else { throw TocsinError.storeUnavailable("the store is closed") }
        try await client.withConnection { connection in
            self.inUse.add(1, ordering: .relaxed)
            defer { self.inUse.subtract(1, ordering: .relaxed) }
            try await connection.listen(on: channel, consume: consume)
        }
    }

    /// With several hosts: looks (once at a time, in the background) for one that takes writes,
    /// and moves the pool there if it is not the current one.
    private func findWritableHost() {
        guard location.hosts.count > 1 else { return }
        let start = state.withLock { s -> Bool in
            guard !s.probing, !s.closed else { return false }
            s.probing = true
            return true
        }
        guard start else { return }
        probes.add(1, ordering: .relaxed)
        Task {
            defer { state.withLock { $0.probing = false } }
            for host in location.hosts {
                guard await accepts(host) else { continue }
                let old = state.withLock { s -> Current? in
                    guard !s.closed, s.current?.host != host else { return nil }
                    let old = s.current
                    s.current = Self.start(location: location, host: host, logger: logger)
                    return old
                }
                if let old {
                    logger.warning(
                        "the store moved to another PostgreSQL server, which accepts writes",
                        metadata: ["from": "\(old.host.name):\(old.host.port)", "to": "\(host.name):\(host.port)"])
                    old.runner.cancel()
                }
                return
            }
        }
    }

    /// Whether `host` answers and (with `read-write`) is not a standby.
    private func accepts(_ host: PostgresLocation.Host) async -> Bool {
        var tls = PostgresConnection.Configuration.TLS.disable
        if location.requireTLS {
            guard let context = try? NIOSSLContext(configuration: .makeClientConfiguration()) else { return false }
            tls = .require(context)
        }
        var config = PostgresConnection.Configuration(
            host: host.name, port: host.port, username: location.user, password: location.password, database: location.database, tls: tls)
        config.options.connectTimeout = .seconds(2)
        let configuration = config
        do {
            return try await Self.withDeadline(.seconds(3)) { [logger, location] in
                let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
                defer { Task { try? await connection.close() } }
                guard location.readWriteOnly else { return true }
                for try await recovering in try await connection.query("SELECT pg_is_in_recovery()", logger: logger).decode(Bool.self) {
                    return !recovering
                }
                return false
            }
        } catch {
            return false
        }
    }

    /// `body`'s result, or once `timeout` passes `timedOut`'s error (by default `store_unavailable`:
    /// nothing answered in time), or `CancellationError`
    /// at once when the calling task is cancelled (a service stopping must not wait out a
    /// dead database). The work is then cancelled and left to end on its own: a query in
    /// flight ends with its connection.
    static func withDeadline<T: Sendable>(
        _ timeout: Duration, timedOut: (@Sendable () -> TocsinError)? = nil, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let race = Race<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                race.pending.withLock { $0 = continuation }
                let work = Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await body()) } catch { result = .failure(error) }
                    race.settle(with: result)
                }
                let timer = Task {
                    try? await Task.sleep(for: timeout)
                    guard !Task.isCancelled else { return }
                    race.settle(with: .failure(timedOut?() ?? TocsinError.storeUnavailable("no answer within \(timeout)")))
                }
                race.tasks.withLock { $0 = (work, timer) }
                // Cancelled before the continuation was recorded (the handler found nothing to settle).
                if Task.isCancelled { race.settle(with: .failure(CancellationError())) }
                // Settled before the tasks were recorded (done at once, or cancelled meanwhile).
                if race.pending.withLock({ $0 == nil }) { race.cancelTasks() }
            }
        } onCancel: {
            race.settle(with: .failure(CancellationError()))
        }
    }

    /// The work and the timer of `withDeadline`: whichever settles first wins.
    private final class Race<T: Sendable>: Sendable {
        let pending = Mutex<CheckedContinuation<T, any Error>?>(nil)
        let tasks = Mutex<(work: Task<Void, Never>, timer: Task<Void, Never>)?>(nil)

        /// Resumes the caller with the first result; the work and the timer are then cancelled.
        func settle(with result: Result<T, any Error>) {
            guard let continuation = pending.withLock({ p in defer { p = nil }; return p }) else { return }
            continuation.resume(with: result)
            cancelTasks()
        }

        func cancelTasks() {
            guard let (work, timer) = tasks.withLock({ $0 }) else { return }
            work.cancel()
            timer.cancel()
        }
    }
}
