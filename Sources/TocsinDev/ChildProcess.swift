public import Foundation
import Synchronization

/// A `tocsin` process started by this one (`tocsin dev`, `tocsin bench`, the integration tests):
/// it is started, its stdout is read until it says where it listens, and it can be signalled
/// (SIGKILL for a crash, SIGTERM for a graceful stop) and waited for.
public final class ChildProcess: Sendable {
    public let port: Int
    public let pid: Int32
    private let process: Mutex<Process>
    private let exited = Atomic<Bool>(false)

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
    /// `listening on http://HOST:PORT`. Later stdout lines go to `output` (stderr is inherited
    /// when `inheritStderr`, else discarded).
    public init(
        executable: String = ChildProcess.tocsinBinary, arguments: [String], timeout: Duration = .seconds(30), inheritStderr: Bool = false,
        output: (@Sendable (String) -> Void)? = nil
    ) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdout = Pipe()
        process.standardOutput = stdout
        if !inheritStderr { process.standardError = FileHandle.nullDevice }
        try process.run()
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        let handle = stdout.fileHandleForReading
        let portSeen = Atomic<Bool>(false)
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...newline)
                    if portSeen.load(ordering: .relaxed) { output?(line) } else { continuation.yield(line) }
                }
            }
            continuation.finish()
        }
        let port: Int? = await Self.first(within: timeout) {
            for await line in lines {
                if let port = Self.listeningPort(in: line) {
                    portSeen.store(true, ordering: .relaxed)
                    output?(line)
                    return port
                }
                output?(line)
            }
            return nil
        }
        guard let port else {
            process.terminate()
            process.waitUntilExit()
            throw ChildProcessError("\(URL(fileURLWithPath: executable).lastPathComponent) \(arguments.joined(separator: " ")) did not report a port within \(timeout)")
        }
        self.port = port
        self.pid = process.processIdentifier
        self.process = Mutex(process)
    }

    /// The port in "... listening on http://HOST:PORT ...".
    static func listeningPort(in line: String) -> Int? {
        guard let range = line.range(of: "listening on http://") else { return nil }
        let rest = line[range.upperBound...]
        guard let colon = rest.lastIndex(of: ":", before: rest.firstIndex(of: " ") ?? rest.endIndex) else { return nil }
        return Int(rest[rest.index(after: colon)...].prefix { $0.isNumber })
    }

    public var isRunning: Bool { process.withLock { $0.isRunning } }

    /// Sends `signal` and waits for the process to exit.
    public func kill(_ signal: Int32 = SIGKILL) {
        Foundation.kill(pid, signal)
        waitForExit()
    }

    /// Blocks until the process exits; returns its status.
    @discardableResult
    public func waitForExit() -> Int32 {
        let p = process.withLock { $0 }
        p.waitUntilExit()
        exited.store(true, ordering: .relaxed)
        return p.terminationStatus
    }

    /// Waits for the exit without blocking a thread of the cooperative pool.
    public func exit() async -> Int32 {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: self.waitForExit()) }
        }
    }

    deinit {
        let p = process.withLock { $0 }
        if p.isRunning {
            Foundation.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
    }

    /// The first value `body` produces within `timeout`, or nil.
    static func first<T: Sendable>(within timeout: Duration, _ body: @escaping @Sendable () async -> T?) async -> T? {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { await body() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension Substring {
    fileprivate func lastIndex(of character: Character, before end: Index) -> Index? {
        self[startIndex..<end].lastIndex(of: character)
    }
}
