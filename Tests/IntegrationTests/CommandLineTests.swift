import Foundation
import Testing
import TocsinDev
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
        (["bench", "throughput", "--postgres"], "--postgres needs --spawn"),
        (["bench", "network", "--spawn", "--namespaces"], "--namespaces is for the latency and throughput modes"),
        (["bench", "throughput", "--spawn", "--postgres", "--store", "postgres://tocsin@db/tocsin"], "give one of them"),
        (["bench", "throughput", "--spawn", "--store", "mysql://db/tocsin"], "--store: "),
        (["bench", "latency", "--spawn", "--brokers", "2"], "more than one broker needs a PostgreSQL store"),
        (["bench", "latency", "--spawn", "--postgres", "--brokers", "0"], "--brokers: the number of brokers must be in 1...200"),
        (["bench", "throughput", "--spawn", "--namespaces", "--store", "postgres://tocsin@db/tocsin"], "use it with --postgres"),
        (["bench", "throughput", "--brokers", "2"], "--brokers counts brokers this bench spawns"),
        (["bench", "connections", "--spawn", "--idle-stage", "sideways"], "--idle-stage must be upgrade, hello or subscribe"),
        (["bench", "connections", "--spawn", "--connections", "0"], "--connections must be between 1 and 1000000"),
        (["bench", "controller", "--spawn", "--duration=-1"], "--duration must be between 0.1 and 86400 seconds"),
        (["bench", "latency", "--spawn", "--rate", "0"], "--rate must be between 1 and 1000000"),
        (["serve", "--trace-sample-ratio", "2", "--port", "0"], "--trace-sample-ratio must be between 0 and 1"),
        (["serve", "--otlp-endpoint", "collector:4318", "--port", "0"], "--otlp-endpoint must be an http:// or https:// URL"),
        (["serve", "--otlp-protocol", "grpc", "--port", "0"], "--otlp-protocol must be http/protobuf or http/json"),
        (["broker", "--trace-deliveries-per-event=-1", "--port", "0"], "--trace-deliveries-per-event must be between 0"),
        (["bench", "throughput", "--spawn", "--batch", "0"], "--batch must be between 1 and 1000, got 0"),
        (["serve", "--keepalive", "0", "--port", "0"], "--keepalive must be between 1.0 and 3600.0 seconds, got 0.0"),
    ])
    func badFlagsAreRefusedWithTheFlagNamed(arguments: [String], mentions: String) async throws {
        // Off the pool: 27 cases each waiting for a process would hold its two threads for seconds.
        let (status, stderr) = try await PostgresServer.offThePool { try Self.run(arguments) }
        #expect(status != 0)
        // The error line itself names the flag (the usage below it names every flag anyway).
        let errorLine = stderr.split(separator: "\n").first { $0.hasPrefix("Error: ") } ?? ""
        #expect(errorLine.contains(mentions), "stderr: \(stderr)")
    }

    // MARK: - Messages for people

    /// Words of NIO's error descriptions that must never reach a user.
    static let nioWords = ["errno", "NIOConnectionError", "SingleConnectionFailure", "IOError", "HTTPClientError", "connection reset (error set)"]

    /// A local port nothing listens on (bound, read back, closed).
    static func deadPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test(arguments: [["publish", "emergencies", #"{"kind":"fire"}"#], ["streams"], ["channels", "EmergenciesNearMe"]])
    func aCommandToAPortNothingListensOnSaysSoInWords(command: [String]) throws {
        let url = "http://127.0.0.1:\(try Self.deadPort())"
        let (status, stderr) = try Self.run(command + ["--url", url])
        #expect(status != 0)
        #expect(stderr.contains("Error: cannot reach a broker at \(url) (connection refused); is `tocsin serve` running?"), "stderr: \(stderr)")
        for word in Self.nioWords { #expect(!stderr.contains(word), "stderr: \(stderr)") }
    }

    @Test func anUnknownHostAndABadURLAreSaidInWords() throws {
        let unknown = try Self.run(["publish", "--url", "http://no-such-host.invalid:7400", "s", "{}"])
        #expect(unknown.status != 0)
        #expect(unknown.text.contains("(host 'no-such-host.invalid' not found); check the host name"), "stderr: \(unknown.text)")
        let bad = try Self.run(["streams", "--url", "localhost:7400"])
        #expect(bad.status != 0)
        #expect(bad.text.contains("'localhost:7400' is not a URL Tocsin can use"), "stderr: \(bad.text)")
        for word in Self.nioWords { #expect(!unknown.text.contains(word) && !bad.text.contains(word)) }
    }

    @Test func statusExplainsAStandaloneBrokerAndShowsIt() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let server = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "0", "--data-dir", directory, "--broker-id", "solo"])
        defer { server.kill(SIGKILL) }
        let url = "http://127.0.0.1:\(server.port)"
        let (status, stdout) = try Self.run(["status", "--url", url], capturing: .stdout)
        #expect(status == 0)
        #expect(stdout.contains("\(url) is broker solo running standalone (`tocsin serve`): no controller"), "stdout: \(stdout)")
        #expect(stdout.contains("ws://127.0.0.1:\(server.port)/v1/ws"), "stdout: \(stdout)")
        #expect(stdout.contains("1 broker(s)"), "stdout: \(stdout)")
    }

    @Test func statusWithNothingAtTheControllerPortSaysWhereAStandaloneBrokerIs() throws {
        let url = "http://127.0.0.1:\(try Self.deadPort())"
        let (status, stderr) = try Self.run(["status", "--url", url])
        #expect(status != 0)
        let sentence = "cannot reach a controller or broker at \(url) (connection refused); is `tocsin controller` running?"
        #expect(stderr.contains(sentence), "stderr: \(stderr)")
        #expect(stderr.contains("--url http://127.0.0.1:7400"), "stderr: \(stderr)")
        for word in Self.nioWords { #expect(!stderr.contains(word), "stderr: \(stderr)") }
    }

    /// `subscribe` that cannot reach anything retries forever: it says why once, not on every try.
    /// A listener that accepts and closes counts the tries, so the test waits for them, not for time.
    @Test func subscribePrintsEachWarningOnce() async throws {
        let listener = try ClosingListener()
        defer { listener.stop() }
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let errors = directory + "/stderr"
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ServerProcess.tocsinBinary)
        process.arguments = ["subscribe", "--url", "http://127.0.0.1:\(listener.port)", "--client", "once", "EmergenciesNearMe"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        try await waitUntil("three tries", timeout: .seconds(40)) { listener.accepted >= 3 }
        process.terminate()
        process.waitUntilExit()
        let text = try String(contentsOfFile: errors, encoding: .utf8)
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("disconnected") }
        #expect(lines.count == 1, "stderr: \(text)")
        #expect(lines.first?.contains("http://127.0.0.1:\(listener.port)") == true, "stderr: \(text)")
        #expect(!text.contains("warning"), "stderr: \(text)")
        for word in Self.nioWords { #expect(!text.contains(word), "stderr: \(text)") }
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
    @Test func benchSpawnsItsOwnExecutable() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let copy = directory + "/tocsin-copy"
        try Self.copyExecutable(ServerProcess.tocsinBinary, to: copy)
        // Off the pool: a test blocking one of its two threads for seconds stalls every async test meanwhile.
        let (status, text) = try await PostgresServer.offThePool {
            try Self.run(
                ["bench", "throughput", "--spawn", "--publishers", "1", "--duration", "0.5", "--warmup", "0"], executable: copy, capturing: .stdout)
        }
        #expect(status == 0)
        #expect(text.contains("spawned \(copy) serve"), "stdout: \(text)")
        #expect(text.contains("durable publishes:"), "stdout: \(text)")
    }

    /// `bench connections` on a small scale: every idle client subscribes, the broker's memory is
    /// read before and after, and the sample gets every event.
    @Test func benchConnectionsHoldsIdleClientsAndMeasuresTheSample() async throws {
        let (status, text) = try await PostgresServer.offThePool {
            try Self.run(
                ["bench", "connections", "--spawn", "--connections", "300", "--subscribers", "5", "--rate", "20", "--duration", "1"],
                capturing: .stdout)
        }
        #expect(status == 0, "stdout: \(text)")
        #expect(text.contains("300 idle clients through subscribe"), "stdout: \(text)")
        #expect(text.contains("KiB per idle client"), "stdout: \(text)")
        #expect(text.contains("(0 missing after a 2 s settle)"), "stdout: \(text)")
    }
}

/// A TCP listener on 127.0.0.1 that accepts connections and closes them at once, counting them.
final class ClosingListener: @unchecked Sendable {
    // @unchecked: `fd` is set once in init; `count` is behind `lock`.
    let port: Int
    private let fd: Int32
    private let lock = NSLock()
    private var count = 0

    var accepted: Int { lock.withLock { count } }

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = self.fd
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard fd >= 0, ok else { throw POSIXError(.EADDRINUSE) }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(fd, nil, nil)
                guard client >= 0 else { return }
                close(client)
                lock.withLock { count += 1 }
            }
        }
    }

    /// Stops accepting (the accepting thread's `accept` fails and it ends).
    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
