public import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temporary directory,
/// `pg_ctl start` on a free loopback port, removed by `destroy`. It uses the machine's
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
    /// The connection string of its `tocsin` database, as `--store` takes it.
    public var url: String { "postgres://tocsin@127.0.0.1:\(port)/tocsin" }
    public var dataDirectory: String { directory + "/data" }

    private let extraSettings: [String]

    /// Initializes and starts a server, with a `tocsin` superuser (trust auth on loopback) and a
    /// `tocsin` database. `settings` are extra `-c name=value` server settings.
    public static func start(durable: Bool = false, settings: [String] = [], port: Int? = nil) throws -> PostgresServer {
        let server = try PostgresServer(durable: durable, settings: settings, port: port ?? freePort())
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
    public static func startStandby(of primary: PostgresServer, durable: Bool = false, settings: [String] = []) throws -> PostgresServer {
        let standby = try PostgresServer(durable: durable, settings: settings, port: freePort())
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

    /// Makes a standby a primary (`pg_ctl promote`), waiting until it accepts writes.
    public func promote() throws {
        try run(binaries + "/pg_ctl", ["promote", "-w", "-t", "60", "-D", dataDirectory])
    }

    private init(durable: Bool, settings: [String], port: Int) throws {
        binaries = try Self.findBinaries()
        directory = NSTemporaryDirectory() + "tocsin-pg-\(UUID().uuidString.prefix(8))"
        self.port = port
        var all = ["port=\(port)", "listen_addresses=127.0.0.1", "max_connections=300", "unix_socket_directories=" + directory]
        if !durable { all += ["fsync=off", "full_page_writes=off"] }
        extraSettings = all + settings
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0, let account = getpwnam("postgres") {
            chown(directory, account.pointee.pw_uid, account.pointee.pw_gid)
        }
    }

    private func initialize() throws {
        try run(binaries + "/initdb", ["-D", dataDirectory, "-U", "tocsin", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"])
    }

    private func startServer() throws {
        let options = extraSettings.map { "-c \($0)" }.joined(separator: " ")
        try run(binaries + "/pg_ctl", ["start", "-w", "-t", "60", "-D", dataDirectory, "-l", directory + "/server.log", "-o", options])
    }

    /// Starts the server again after `stop` or `kill` (same directory, same port).
    public func restart() throws { try startServer() }

    /// Stops the server: `fast` rolls back open transactions and closes connections cleanly;
    /// `immediate` drops everything at once, like a crash (recovery runs at the next start).
    public func stop(immediate: Bool = false) throws {
        try run(binaries + "/pg_ctl", ["stop", "-w", "-D", dataDirectory, "-m", immediate ? "immediate" : "fast"])
    }

    /// SIGKILLs the postmaster (its backends end when they notice it is gone).
    public func kill() {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let pid = Int32(text.split(separator: "\n").first ?? "")
        else { return }
        Glibc.kill(pid, SIGKILL)
        // Its backends hold the port and shared memory until they exit.
        let deadline = ContinuousClock.now + .seconds(10)
        while Glibc.kill(pid, 0) == 0, ContinuousClock.now < deadline { usleep(10_000) }
    }

    /// Stops the server (immediately) and deletes its directory.
    public func destroy() {
        if FileManager.default.fileExists(atPath: dataDirectory + "/postmaster.pid") { try? stop(immediate: true) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `psql -c sql` against the `tocsin` database; returns its output (unaligned, tuples only).
    @discardableResult
    public func psql(_ sql: String, database: String = "tocsin") throws -> String {
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
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        // A process group of its own: the server `pg_ctl` starts must not get the terminal's Ctrl-C.
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
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
