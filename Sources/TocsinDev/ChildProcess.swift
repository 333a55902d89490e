public import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A `tocsin` process started by this one (`tocsin dev`, `tocsin bench`, the integration tests):
/// it is started, its stdout is read until it says where it listens, and it can be signalled
/// (SIGKILL for a crash, SIGTERM for a graceful stop) and waited for.
///
/// Spawned with `posix_spawn`, not Foundation's `Process`: `Process` watches its children with
/// `select`, whose descriptor sets overflow (and corrupt memory) once the parent holds more than
/// 1,024 descriptors — as a benchmark with thousands of client sockets does. The child starts
/// with default signal handling and an empty signal mask, whatever the parent set up.
public final class ChildProcess: Sendable {
    public let port: Int
    public let pid: Int32
    /// The exit status once reaped (by `waitForExit`).
    private let status = Mutex<Int32?>(nil)

    /// This process's own executable, whatever it is named: what the `tocsin` command spawns
    /// (a copy named `tocsin-old` must not start some other build it finds).
    public static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The `tocsin` executable: `TOCSIN_BINARY`, else this process's own executable when it is
    /// `tocsin`, else one next to it (a test bundle's), else the package's build folders.
    public static var tocsinBinary: String {
        if let explicit = ProcessInfo.processInfo.environment["TOCSIN_BINARY"] { return explicit }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.resolvingSymlinksInPath()
        if me.lastPathComponent == "tocsin" { return me.path }
        let beside = me.deletingLastPathComponent().appendingPathComponent("tocsin").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        for candidate in [".build/debug/tocsin", ".build/release/tocsin"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return beside
    }

    /// Starts `executable arguments` and waits up to `timeout` for a stdout line containing
    /// `listening on http://HOST:PORT` (or `https://`). Later stdout lines go to `output` (stderr is inherited
    /// when `inheritStderr`, appended to the file `stderrFile` when given, else discarded).
    /// `environment` adds to (or replaces in) this process's environment for the child.
    public init(
        executable: String = ChildProcess.tocsinBinary, arguments: [String], environment: [String: String] = [:],
        timeout: Duration = .seconds(30), inheritStderr: Bool = false, stderrFile: String? = nil,
        output: (@Sendable (String) -> Void)? = nil
    ) async throws {
        let (pid, stdout) = try Self.spawn(
            executable: executable, arguments: arguments, environment: environment,
            stderr: stderrFile.map { .file($0) } ?? (inheritStderr ? .inherit : .discard))
        self.pid = pid
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        let portSeen = Atomic<Bool>(false)
        Thread.detachNewThread {
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(stdout, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                if n <= 0 { break }
                pending.append(contentsOf: buffer[0..<n])
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    if portSeen.load(ordering: .relaxed) { output?(line) } else { continuation.yield(line) }
                }
            }
            close(stdout)
            continuation.finish()
        }
        let port: Int? = await firstOrNil(within: timeout) {
            for await line in lines {
                output?(line)
                if let port = Self.listeningPort(in: line) {
                    portSeen.store(true, ordering: .relaxed)
                    return port
                }
            }
            return nil
        }
        guard let port else {
            Foundation.kill(pid, SIGKILL)
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0, errno == EINTR {}
            throw ChildProcessError("\(URL(fileURLWithPath: executable).lastPathComponent) \(arguments.joined(separator: " ")) did not report a port within \(timeout)")
        }
        self.port = port
    }

    /// Spawn attributes for a child of ours: default signal handling, an empty signal mask
    /// (whatever this process set up), and a process group of its own (a Ctrl-C at the terminal
    /// reaches only this process, which stops its children in order). Destroy them after use.
    static func initializeAttributes(_ attributes: inout posix_spawnattr_t) {
        posix_spawnattr_init(&attributes)
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
    }

    /// One spawn at a time in this process: between `pipe` and `FD_CLOEXEC` another child could
    /// otherwise inherit this pipe's write end (and its reader would never see the end of it).
    private static let spawning = Mutex<Void>(())

    /// Spawns the process with its stdout on a pipe; returns the pid and the pipe's read end.
    /// The child gets a process group of its own, so a Ctrl-C at the terminal reaches only the
    /// parent, which stops its children in order.
    private static func spawn(
        executable: String, arguments: [String], environment: [String: String], stderr: StandardError
    ) throws -> (Int32, Int32) {
        try spawning.withLock { _ in
            try spawnLocked(executable: executable, arguments: arguments, environment: environment, stderr: stderr)
        }
    }

    /// Where a child's stderr goes.
    enum StandardError {
        case discard
        case inherit
        /// Into the stdout pipe.
        case pipe
        /// Appended to this file (created if missing).
        case file(String)
    }

    /// Runs a short-lived program (not a server) to its end and returns what it wrote on stdout
    /// and stderr; throws, with that output, when it exits with a failure status.
    public static func output(of executable: String, _ arguments: [String]) throws -> String {
        let (pid, fd) = try spawn(executable: executable, arguments: arguments, environment: [:], stderr: .pipe)
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            output.append(contentsOf: buffer[0..<n])
        }
        close(fd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let text = String(decoding: output, as: UTF8.self)
        // Exited normally with status 0.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            let name = URL(fileURLWithPath: executable).lastPathComponent
            throw ChildProcessError("\(name) \(arguments.joined(separator: " ")) failed (wait status \(status)): \(text)")
        }
        return text
    }

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34+), looked up at run time: Swift's
    /// Glibc module does not declare it (it needs _GNU_SOURCE).
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// Has the child close every descriptor from `lowest` up. Where the C library lacks the call,
    /// marks this process's own descriptors close-on-exec instead (under the spawn lock).
    static func closeFrom(_ actions: inout posix_spawn_file_actions_t, _ lowest: Int32) {
        if let addCloseFrom, addCloseFrom(&actions, lowest) == 0 { return }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap({ Int32($0) }) where fd >= lowest { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    private static func spawnLocked(
        executable: String, arguments: [String], environment: [String: String], stderr: StandardError
    ) throws -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ChildProcessError("pipe failed: errno \(errno)") }
        // Neither end leaks into this or any other child (dup2 onto its stdout clears the flag there).
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        switch stderr {
        case .discard: posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        case .inherit: break
        case .pipe: posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        case .file(let path): posix_spawn_file_actions_addopen(&actions, 2, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        }
        // Nothing else of this process's reaches the child: NIO opens and accepts sockets without
        // close-on-exec, and a child holding a copy of a socket this process closes keeps that
        // connection (or a listening port) open for as long as the child lives.
        Self.closeFrom(&actions, 3)
        var attributes = posix_spawnattr_t()
        Self.initializeAttributes(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let result: Int32
        if environment.isEmpty {
            result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        } else {
            let merged = ProcessInfo.processInfo.environment.merging(environment) { _, given in given }
            let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { for p in envp { free(p) } }
            result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        }
        close(fds[1])
        guard result == 0 else {
            close(fds[0])
            throw ChildProcessError("could not start \(executable): \(String(cString: strerror(result)))")
        }
        return (pid, fds[0])
    }

    /// The port in "... listening on http://HOST:PORT ..." (or https://).
    static func listeningPort(in line: String) -> Int? {
        guard let range = line.range(of: "listening on http://") ?? line.range(of: "listening on https://") else { return nil }
        let rest = line[range.upperBound...]
        let hostAndPort = rest.prefix { $0 != " " && $0 != "/" }
        guard let colon = hostAndPort.lastIndex(of: ":") else { return nil }
        return Int(hostAndPort[hostAndPort.index(after: colon)...])
    }

    public var isRunning: Bool {
        status.withLock { s in
            if s != nil { return false }
            var raw: Int32 = 0
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid {
                s = raw
                return false
            }
            return r == 0
        }
    }

    /// Sends `signal` unless the process has already been reaped. A child's pid cannot be
    /// reused before its parent reaps it, and reaping happens only under the same lock, so this
    /// never signals a stranger. Returns whether the signal was sent.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        status.withLock { s in
            guard s == nil else { return false }
            Foundation.kill(pid, signal)
            return true
        }
    }

    /// Sends `signal` and waits for the process to exit.
    public func kill(_ signal: Int32 = SIGKILL) {
        self.signal(signal)
        waitForExit()
    }

    /// Blocks until the process exits; returns its raw wait status.
    @discardableResult
    public func waitForExit() -> Int32 {
        if let known = status.withLock({ $0 }) { return known }
        // Wait without reaping, then reap under the lock (see `signal`).
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0, errno == EINTR {}
        return status.withLock { s in
            if s == nil {
                var raw: Int32 = 0
                if waitpid(pid, &raw, WNOHANG) == pid { s = raw }
            }
            return s ?? -1
        }
    }

    /// Waits for the exit without blocking a thread of the cooperative pool.
    public func exit() async -> Int32 {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: self.waitForExit()) }
        }
    }

    deinit {
        if signal(SIGKILL) { waitForExit() }
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The value `body` produces, or nil if `timeout` passes first (then `body` is cancelled).
public func firstOrNil<T: Sendable>(within timeout: Duration, _ body: @escaping @Sendable () async -> T?) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await body() }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next()!
        group.cancelAll()
        return first
    }
}
