import Foundation
import Testing
import TocsinTesting

/// Bad flags to the network commands and the bench: a clear message naming the flag, a non-zero exit, and
/// nothing started.
@Suite(.timeLimit(.minutes(1)))
struct CommandLineTests {
    enum Output { case stdout, stderr }

    /// Runs `executable arguments` to its exit; returns the status and what it wrote to `output`
    /// (the other stream is discarded).
    static func run(
        _ arguments: [String], executable: String = ServerProcess.tocsinBinary, environment: [String: String] = [:],
        capturing output: Output = .stderr
    ) throws -> (status: Int32, text: String) {
        // A freshly copied executable can be "busy" for a moment: a child that another test
        // forked while the copy was open for writing holds that descriptor until it execs.
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            if !environment.isEmpty {
                process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, given in given }
            }
            let pipe = Pipe()
            process.standardOutput = output == .stdout ? pipe : FileHandle.nullDevice
            process.standardError = output == .stderr ? pipe : FileHandle.nullDevice
            do {
                try process.run()
            } catch let error as NSError
                where (error.userInfo[NSUnderlyingErrorKey] as? NSError)?.code == Int(ETXTBSY) && ContinuousClock.now < deadline
            {
                usleep(20_000)
                continue
            }
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text)
        }
    }

    /// Copies an executable through a descriptor that children spawned meanwhile by other tests
    /// do not inherit (one they kept would make the copy "busy" for as long as they live).
    static func copyExecutable(_ source: String, to destination: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: source))
        let fd = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                offset += n
            }
        }
    }

    @Test(arguments: [
        (["broker", "--host", "0.0.0.0", "--port", "0"], "--advertise"),
        (["broker", "--advertise", "ftp://example", "--port", "0"], "--advertise must be an http"),
        (["broker", "--capacity", "0", "--port", "0"], "--capacity"),
        (["broker", "--lat", "52", "--port", "0"], "--lat and --lon"),
        (["controller", "--lease-ms", "100", "--heartbeat-ms", "100", "--port", "0"], "--lease-ms"),
        (["controller", "--host", "0.0.0.0", "--port", "0"], "--advertise"),
        (["controller", "--tolerance", "1.5", "--port", "0"], "--tolerance"),
        (["dev", "--brokers", "0"], "--brokers"),
        (["serve", "--max-store-size", "12 parsecs", "--port", "0"], "--max-store-size (or TOCSIN_MAX_STORE_SIZE): '12 parsecs' is not a size"),
        (["broker", "--max-store-size", "0", "--port", "0"], "--max-store-size (or TOCSIN_MAX_STORE_SIZE): '0' is out of range"),
        (["serve", "--max-store-size", "64KB", "--port", "0"], "--max-store-size (or TOCSIN_MAX_STORE_SIZE) must be at least 1MiB, got '64KB'"),
        (["bench", "latency", "--url", "https://example.invalid"], "--url must be"),
        (["bench", "throughput", "--url", "not a url"], "--url must be"),
    ])
    func badFlagsAreRefusedWithTheFlagNamed(arguments: [String], mentions: String) throws {
        let (status, stderr) = try Self.run(arguments)
        #expect(status != 0)
        #expect(stderr.contains(mentions), "stderr: \(stderr)")
    }

    /// A mistyped TOCSIN_TASK_EXECUTOR stops the server commands with the variable named,
    /// instead of running with a default the operator did not ask for.
    @Test(arguments: ["serve", "broker", "controller"])
    func anUnknownTaskExecutorIsRefused(command: String) throws {
        let (status, stderr) = try Self.run([command, "--port", "0"], environment: ["TOCSIN_TASK_EXECUTOR": "event-loop"])
        #expect(status != 0)
        #expect(stderr.contains("TOCSIN_TASK_EXECUTOR must be 'pool' or 'event-loops', got 'event-loop'"), "stderr: \(stderr)")
    }

    /// `bench --spawn` measures a server started from its own executable, whatever that is
    /// called — not some other build it finds (a copy named `tocsin-copy` used to start
    /// `.build/debug/tocsin`).
    @Test func benchSpawnsItsOwnExecutable() throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let copy = directory + "/tocsin-copy"
        try Self.copyExecutable(ServerProcess.tocsinBinary, to: copy)
        let (status, text) = try Self.run(
            ["bench", "throughput", "--spawn", "--publishers", "1", "--duration", "0.5", "--warmup", "0"], executable: copy, capturing: .stdout)
        #expect(status == 0)
        #expect(text.contains("spawned \(copy) serve"), "stdout: \(text)")
        #expect(text.contains("durable publishes:"), "stdout: \(text)")
    }
}
