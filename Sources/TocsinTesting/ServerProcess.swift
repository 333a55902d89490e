public import Foundation
import Synchronization

/// A real `tocsin` process, for tests that kill it with SIGKILL.
public final class ServerProcess: Sendable {
    public let port: Int
    private let process: Process

    /// The `tocsin` executable built next to the test bundle (or `TOCSIN_BINARY`).
    public static var binary: String {
        if let explicit = ProcessInfo.processInfo.environment["TOCSIN_BINARY"] { return explicit }
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tocsin").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        for candidate in [".build/debug/tocsin", ".build/release/tocsin"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return beside
    }

    /// Starts `tocsin serve` and waits (up to `timeout`) for it to print where it listens.
    public init(arguments: [String], timeout: Duration = .seconds(20)) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        let handle = stdout.fileHandleForReading
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    continuation.yield(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            continuation.finish()
        }
        let port: Int? = await firstOrNil(within: timeout) {
            for await line in lines {
                if let range = line.range(of: "listening on http://"), let colon = line[range.upperBound...].firstIndex(of: ":") {
                    return Int(line[line.index(after: colon)...].prefix { $0.isNumber })
                }
            }
            return nil
        }
        guard let port else {
            process.terminate()
            throw TestFailure("tocsin \(arguments.joined(separator: " ")) did not report a port within \(timeout)")
        }
        self.port = port
    }

    public var pid: Int32 { process.processIdentifier }

    /// Sends a signal (SIGKILL for a crash, SIGTERM for a graceful stop) and waits for the exit.
    public func kill(_ signal: Int32 = SIGKILL) {
        Foundation.kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
