public import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temporary directory,
/// `pg_ctl start` on a free port (on loopback, and on any other addresses it is given), removed by `destroy`. It uses the machine's
/// PostgreSQL binaries (`TOCSIN_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
/// `pg_config --bindir`); PostgreSQL refuses to run as root, so as root they run as the
/// `postgres` account (`runuser`).
///
/// `durable: false` (tests) turns fsync off: the tests kill processes, not the machine. Commits
/// stay synchronous (`synchronous_commit` on): each one's WAL is written to the kernel before it
/// is acknowledged, so a server SIGKILLed or stopped with `immediate` loses nothing it
/// acknowledged. (With `synchronous_commit=off` it would lose the last commits, and their seqs
/// would be given again to other events.)
public final class PostgresServer: Sendable {
    public let directory: String
    public let port: Int
    public let binaries: String
    /// The connection string of its `tocsin` database on loopback, as `--store` takes it.
    public var url: String { url(host: "127.0.0.1") }
    /// The connection string of its `tocsin` database at `host`, one of its listen addresses.
    public func url(host: String) -> String { "postgres://tocsin@\(host):\(port)/tocsin" }
    public var dataDirectory: String { directory + "/data" }

    private let extraSettings: [String]
    /// Networks (`10.1.2.0/24`) whose clients are trusted besides loopback's.
    private let trusted: [String]

    /// Initializes and starts a server, with a `tocsin` superuser (trust auth on loopback) and a
    /// `tocsin` database. `settings` are extra `-c name=value` server settings. It listens on
    /// `listenAddresses` (e.g. a bridge's address besides 127.0.0.1, for network namespaces) and
    /// trusts clients from the `trusting` networks (CIDR, e.g. `NetworkNamespaces.subnet`) too.
    ///
    /// Async because it waits for programs (initdb, pg_ctl): the waiting happens on a thread of
    /// its own (`offThePool`), never on one of Swift's few cooperative threads, which many
    /// tests starting servers at once would otherwise all block.
    public static func start(
        durable: Bool = false, settings: [String] = [], port: Int? = nil, listenAddresses: [String] = ["127.0.0.1"], trusting: [String] = []
    ) async throws -> PostgresServer {
        // initdb is CPU-heavy: a whole test suite starting dozens at once would starve
        // everything else of the machine's cores. A few at a time.
        try await starting.run {
            try await offThePool {
                try startWaiting(durable: durable, settings: settings, port: port, listenAddresses: listenAddresses, trusting: trusting)
            }
        }
    }

    /// At most this many servers start at once in this process.
    private static let starting = Limiter(3)

    private static func startWaiting(
        durable: Bool, settings: [String], port: Int?, listenAddresses: [String], trusting: [String]
    ) throws -> PostgresServer {
        let server = try PostgresServer(
            durable: durable, settings: settings, port: port ?? freePort(), listenAddresses: listenAddresses, trusting: trusting)
        do {
            try server.initialize()
            try server.startServer()
            try server.run(server.binaries + "/createdb", ["-h", "127.0.0.1", "-p", "\(server.port)", "-U", "tocsin", "tocsin"])
        } catch {
            server.destroy()
            throw error
        }
        return server
    }

    /// Starts a streaming-replication standby of `primary` on a port of its own: `pg_basebackup -R`
    /// copies the primary's data (the primary needs `wal_level=replica` and `max_wal_senders`;
    /// `initdb -A trust` lets loopback replication connections in) and writes the
    /// `primary_conninfo` that makes the copy follow it. A primary with
    /// `synchronous_standby_names='*'` waits at each commit until this standby has the WAL.
    /// `promote()` makes it a primary that takes writes.
    public static func startStandby(of primary: PostgresServer, durable: Bool = false, settings: [String] = []) async throws -> PostgresServer {
        try await offThePool {
            let standby = try PostgresServer(durable: durable, settings: settings, port: freePort(), listenAddresses: ["127.0.0.1"], trusting: [])
            do {
                try standby.run(standby.binaries + "/pg_basebackup", [
                    "-h", "127.0.0.1", "-p", "\(primary.port)", "-U", "tocsin", "-D", standby.dataDirectory,
                    "-R", "-X", "stream", "-c", "fast", "--no-sync",
                ])
                try standby.startServer()
            } catch {
                standby.destroy()
                throw error
            }
            return standby
        }
    }

    /// Makes a standby a primary (`pg_ctl promote`), waiting until it accepts writes.
    public func promote() async throws {
        try await Self.offThePool { try self.run(self.binaries + "/pg_ctl", ["promote", "-w", "-t", "60", "-D", self.dataDirectory]) }
    }

    private init(durable: Bool, settings: [String], port: Int, listenAddresses: [String], trusting: [String]) throws {
        guard !listenAddresses.isEmpty, listenAddresses.allSatisfy({ !$0.isEmpty && !$0.contains(where: { $0 == "," || $0 == " " }) }) else {
            throw ChildProcessError("PostgreSQL's listen addresses must be one or more host names or IP addresses, got \(listenAddresses)")
        }
        guard trusting.allSatisfy({ !$0.isEmpty && !$0.contains(where: \.isWhitespace) }) else {
            throw ChildProcessError("the networks PostgreSQL trusts must be CIDR networks such as 10.1.2.0/24, got \(trusting)")
        }
        binaries = try Self.findBinaries()
        directory = NSTemporaryDirectory() + "tocsin-pg-\(UUID().uuidString.prefix(8))"
        self.port = port
        trusted = trusting
        var all = ["port=\(port)", "listen_addresses=" + listenAddresses.joined(separator: ","), "max_connections=300", "unix_socket_directories=" + directory]
        // synchronous_commit stays on: with it off, a crash (an immediate shutdown) loses
        // acknowledged commits, and tests that restart the server would see their seqs reused.
        if !durable { all += ["fsync=off", "full_page_writes=off"] }
        extraSettings = all + settings
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0, let account = getpwnam("postgres") {
            chown(directory, account.pointee.pw_uid, account.pointee.pw_gid)
        }
    }

    private func initialize() throws {
        try run(binaries + "/initdb", ["-D", dataDirectory, "-U", "tocsin", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"])
        guard !trusted.isEmpty else { return }
        let lines = trusted.map { "host all all \($0) trust\n" }.joined()
        guard let file = FileHandle(forWritingAtPath: dataDirectory + "/pg_hba.conf") else {
            throw ChildProcessError("could not open \(dataDirectory)/pg_hba.conf to trust \(trusted)")
        }
        defer { try? file.close() }
        try file.seekToEnd()
        try file.write(contentsOf: Data(lines.utf8))
    }

    private func startServer() throws {
        let options = extraSettings.map { "-c \($0)" }.joined(separator: " ")
        try run(binaries + "/pg_ctl", ["start", "-w", "-t", "60", "-D", dataDirectory, "-l", directory + "/server.log", "-o", options])
    }

    deinit { destroy() }

    /// Starts the server again after `stop` or `kill` (same directory, same port).
    public func restart() async throws { try await Self.offThePool { try self.startServer() } }

    /// Stops the server: `fast` rolls back open transactions and closes connections cleanly;
    /// `immediate` drops everything at once, like a crash (recovery runs at the next start).
    public func stop(immediate: Bool = false) async throws {
        try await Self.offThePool { try self.stopWaiting(immediate: immediate) }
    }

    private func stopWaiting(immediate: Bool) throws {
        try run(binaries + "/pg_ctl", ["stop", "-w", "-D", dataDirectory, "-m", immediate ? "immediate" : "fast"])
    }

    /// The running postmaster's pid (its backends are its children), from `postmaster.pid`.
    public var postmasterPID: Int32? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8) else { return nil }
        return Int32(text.split(separator: "\n").first ?? "")
    }

    /// SIGKILLs the postmaster (its backends end when they notice it is gone).
    public func kill() async {
        guard let pid = postmasterPID else { return }
        Glibc.kill(pid, SIGKILL)
        // Its backends hold the port and shared memory until they exit.
        _ = try? await Self.offThePool {
            let deadline = ContinuousClock.now + .seconds(10)
            while Glibc.kill(pid, 0) == 0, ContinuousClock.now < deadline { usleep(10_000) }
        }
    }

    private let destroyed = Atomic<Bool>(false)

    /// Runs `body`, which waits for child processes, on a thread of its own, off Swift's
    /// cooperative pool.
    public static func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Stops the server (immediately) and deletes its directory. Also done when the last
    /// reference goes away, so a failing test leaves no server running.
    public func destroy() {
        guard !destroyed.exchange(true, ordering: .relaxed) else { return }
        if FileManager.default.fileExists(atPath: dataDirectory + "/postmaster.pid") { try? stopWaiting(immediate: true) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `psql -c sql` against the `tocsin` database; returns its output (unaligned, tuples only).
    @discardableResult
    public func psql(_ sql: String, database: String = "tocsin") async throws -> String {
        try await Self.offThePool { try self.psqlWaiting(sql, database: database) }
    }

    private func psqlWaiting(_ sql: String, database: String) throws -> String {
        try run(binaries + "/psql", ["-h", "127.0.0.1", "-p", "\(port)", "-U", "tocsin", "-d", database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
    }

    /// The server's log, for a failing test's message.
    public var log: String { (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "" }

    /// Runs a PostgreSQL program (as `postgres` when this process is root) and returns its
    /// output; a non-zero exit throws with the output.
    @discardableResult
    public func run(_ program: String, _ arguments: [String]) throws -> String {
        let asPostgres = getuid() == 0
        let executable = asPostgres ? "/usr/sbin/runuser" : program
        let argv = asPostgres ? ["runuser", "-u", "postgres", "--", program] + arguments : [program] + arguments
        let (status, output) = try Self.spawnAndWait(executable, argv, outputFile: directory + "/command-\(UUID().uuidString.prefix(8)).out")
        guard status == 0 else {
            throw ChildProcessError("\(URL(fileURLWithPath: program).lastPathComponent) \(arguments.joined(separator: " ")) failed (status \(status)): \(output)")
        }
        return output
    }

    /// Spawns and waits, with stdout and stderr in `outputFile` (read back, then removed).
    static func spawnAndWait(_ executable: String, _ argv: [String], outputFile: String) throws -> (Int32, String) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_TRUNC, 0o666)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of this process's: the server pg_ctl starts outlives this call, and a copy
        // of a socket this process later closes (an in-process broker's connection, accepted
        // without close-on-exec) would keep that connection open as long as the server runs.
        ChildProcess.closeFrom(&actions, 3)
        // A process group of its own: the server `pg_ctl` starts must not get the terminal's Ctrl-C.
        var attributes = posix_spawnattr_t()
        ChildProcess.initializeAttributes(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var pid: pid_t = 0
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for arg in cArgs { free(arg) } }
        let result = posix_spawn(&pid, executable, &actions, &attributes, cArgs, environ)
        guard result == 0 else { throw ChildProcessError("could not start \(executable): \(String(cString: strerror(result)))") }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0, errno == EINTR {}
        let output = (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: outputFile)
        let exited = raw & 0x7f == 0
        return (exited ? (raw >> 8) & 0xff : 128 + (raw & 0x7f), output)
    }

    /// Where the PostgreSQL programs are.
    static func findBinaries() throws -> String {
        if let explicit = ProcessInfo.processInfo.environment["TOCSIN_PG_BIN"] { return explicit }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        if let newest = versions.last, FileManager.default.isExecutableFile(atPath: "\(root)/\(newest)/bin/initdb") {
            return "\(root)/\(newest)/bin"
        }
        throw ChildProcessError("no PostgreSQL binaries found (install postgresql, or set TOCSIN_PG_BIN to the folder holding initdb and pg_ctl)")
    }

    /// A loopback port nothing listens on now.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// At most `limit` bodies run at once; the others wait their turn, first come first served.
actor Limiter {
    private let limit: Int
    private var running = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(_ limit: Int) { self.limit = limit }

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        if running < limit {
            running += 1
        } else {
            await withCheckedContinuation { waiting.append($0) }
        }
        defer {
            if waiting.isEmpty { running -= 1 } else { waiting.removeFirst().resume() }
        }
        return try await body()
    }
}

/// A database of its own on the PostgreSQL server this process shares among its tests
/// (`PostgresServer.database()`): a test that only needs somewhere to store gets one in tens of
/// milliseconds instead of starting a server, and a suite of dozens of such tests runs one
/// server instead of dozens. Tests that stop, kill or fail over the server start their own.
public struct PostgresDatabase: Sendable {
    public let server: PostgresServer
    public let name: String

    /// Its connection string, as `--store` takes it.
    public var url: String { "postgres://tocsin@127.0.0.1:\(server.port)/\(name)" }

    /// Runs `psql -c sql` against this database; returns its output (unaligned, tuples only).
    @discardableResult
    public func psql(_ sql: String) async throws -> String {
        let (server, name) = (server, name)
        return try await PostgresServer.offThePool { try server.runSQL(sql, database: name) }
    }

    /// Drops the database (in the background: nothing waits for it, and the shared server goes
    /// when the process exits). The name matches `PostgresServer.destroy`, so a test can hold either.
    public func destroy() {
        let (server, name) = (server, name)
        Thread.detachNewThread { _ = try? server.runSQL("DROP DATABASE IF EXISTS \(name) WITH (FORCE)", database: "postgres") }
    }
}

extension PostgresServer {
    /// A new, empty database on the server this process shares (started by the first caller,
    /// stopped when the process exits).
    public static func database() async throws -> PostgresDatabase {
        let server = try await SharedServer.instance.server()
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        try await offThePool { _ = try server.runSQL("CREATE DATABASE \(name)", database: "postgres") }
        return PostgresDatabase(server: server, name: String(name))
    }

    /// `psql -c sql`, waiting on the calling thread (for the shared server's housekeeping).
    func runSQL(_ sql: String, database: String) throws -> String {
        try run(binaries + "/psql", ["-h", "127.0.0.1", "-p", "\(port)", "-U", "tocsin", "-d", database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
    }
}

/// The process's shared server: started once, on first use; destroyed at exit (`atexit`).
actor SharedServer {
    static let instance = SharedServer()
    /// For the exit handler, which cannot reach an actor.
    nonisolated static let started = Mutex<PostgresServer?>(nil)

    private var starting: Task<PostgresServer, any Error>?

    func server() async throws -> PostgresServer {
        if let starting, let server = try? await starting.value { return server }
        let task = Task { try await PostgresServer.start() }
        starting = task
        let server = try await task.value
        Self.started.withLock { $0 = server }
        atexit { SharedServer.started.withLock { $0 }?.destroy() }
        return server
    }
}
