import ArgumentParser
import Foundation
import Logging
import NIOCore
import Synchronization
import TocsinCore
import TocsinDev
import WSClient

/// `tocsin bench`: measures a broker from the outside, as clients see it.
///
/// - `latency`: N WebSocket subscribers of one channel, a publisher at a fixed rate; prints
///   delivered/expected, publish→notify latency percentiles, and the server's CPU time per
///   delivered notification (from /proc, when the server is spawned here).
/// - `throughput`: P publishers, each publishing one event at a time and waiting for its
///   durable `published` reply; prints events/s and publish latency.
/// - `network`: a local network of processes, subscribers of the client library, failover and
///   rebalance events (see `NetworkBench`).
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark a broker: delivery latency and CPU per delivery, or durable publish throughput.")

    enum Mode: String, ExpressibleByArgument { case latency, throughput, network }

    @Argument(help: "latency, throughput or network.")
    var mode: Mode = .latency

    @Option(help: "The broker's HTTP URL; ignored with --spawn.")
    var url: String = "http://127.0.0.1:7400"

    @Flag(help: "Start a fresh `tocsin serve` (this binary) on a free port in a temporary directory, and measure its CPU.")
    var spawn = false

    @Flag(name: .customLong("no-fsync"), help: "With --spawn: run the server with --no-fsync.")
    var noFsync = false

    @Option(help: "Subscribers (latency mode).")
    var subscribers = 100

    @Option(help: "Events per second (latency mode).")
    var rate = 500

    @Option(
        name: .customLong("non-readers"),
        help: "Latency mode: this many more subscribers of the same events that never read their socket (slow consumers).")
    var nonReaders = 0

    @Option(help: "Publishers (throughput mode).")
    var publishers = 1

    @Option(name: .customLong("in-flight"), help: "Publishes each publisher keeps unanswered on its connection (throughput mode).")
    var inFlight = 1

    @Flag(help: "Throughput mode: give every publish a key (idempotent publishing), so each also checks and records it.")
    var keys = false

    @Option(help: "Brokers (network mode).")
    var brokers = 3

    @Option(name: .customLong("kill-broker-at"), help: "Network mode: SIGKILL the broker with the most clients this many seconds into publishing.")
    var killBrokerAt: Double?

    @Option(name: .customLong("add-broker-at"), help: "Network mode: start one more broker this many seconds into publishing.")
    var addBrokerAt: Double?

    @Option(help: "Seconds measured, after the warm-up.")
    var duration = 10.0

    @Option(help: "Seconds of warm-up, not measured.")
    var warmup = 2.0

    func validate() throws {
        guard spawn || mode == .network || (url.hasPrefix("http://") && URLComponents(string: url)?.host != nil) else {
            throw ValidationError("--url must be the broker's plain http:// URL (the bench does not speak TLS), not \(url)")
        }
    }

    func run() async throws {
        var logger = Logger(label: "tocsin.bench")
        logger.logLevel = .critical
        if mode == .network {
            try await NetworkBench(
                subscribers: subscribers, brokers: brokers, rate: rate, duration: duration, killAt: killBrokerAt, addAt: addBrokerAt,
                noFsync: noFsync, logger: logger
            ).run()
            return
        }
        var server: ChildProcess? = nil
        var baseURL = url
        let directory = NSTemporaryDirectory() + "tocsin-bench-\(UUID().uuidString)"
        if spawn {
            let executable = ChildProcess.currentExecutable
            let process = try await ChildProcess(
                executable: executable,
                arguments: ["serve", "--port", "0", "--data-dir", directory, "--log-level", "warning"] + (noFsync ? ["--no-fsync"] : []))
            print("spawned \(executable) serve (pid \(process.pid)) on port \(process.port)\(noFsync ? " with --no-fsync" : "")")
            server = process
            baseURL = "http://127.0.0.1:\(process.port)"
        }
        defer {
            server?.kill(SIGTERM)
            if spawn { try? FileManager.default.removeItem(atPath: directory) }
        }
        let ws = baseURL.replacingOccurrences(of: "http://", with: "ws://") + "/v1/ws"
        switch mode {
        case .latency:
            try await latency(webSocketURL: ws, serverPID: server?.pid, logger: logger)
        case .throughput:
            try await throughput(webSocketURL: ws, serverPID: server?.pid, logger: logger)
        case .network:
            break
        }
    }

    // MARK: Latency

    final class Samples: Sendable {
        let latencies = Mutex<[Int64]>([])
        let delivered = Atomic<Int>(0)
        let measuring = Atomic<Bool>(false)
        let subscribed = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let published = Atomic<Int>(0)
        let finished = Atomic<Bool>(false)
        /// The measured window, in the monotonic nanoseconds events carry: an event counts when
        /// it was published inside it (so late deliveries of warm-up events do not).
        let windowStart = Atomic<Int64>(.max)
        let windowEnd = Atomic<Int64>(.max)

        func inWindow(_ sent: Int64) -> Bool {
            sent >= windowStart.load(ordering: .relaxed) && sent < windowEnd.load(ordering: .relaxed)
        }
    }

    func latency(webSocketURL: String, serverPID: Int32?, logger: Logger) async throws {
        let samples = Samples()
        let kind = "bench-\(UInt32.random(in: 0...UInt32.max))"
        // `validate` checked the URL.
        guard let components = URLComponents(string: webSocketURL), let host = components.host else {
            throw ValidationError("bad broker URL \(webSocketURL)")
        }
        let port = components.port ?? 80
        let clients = try await BenchSubscribers.connect(
            host: host, port: port, count: subscribers, kind: kind, ackEvery: 100, samples: samples)
        do {
            let deadline = ContinuousClock.now + .seconds(60)
            while samples.subscribed.load(ordering: .relaxed) < subscribers {
                guard ContinuousClock.now < deadline else { throw ValidationError("subscribers did not all subscribe within 60 s") }
                try await Task.sleep(for: .milliseconds(20))
            }
            // Subscribers that never read: the broker must cut them off without the others noticing.
            var stalled: [RawConnection] = []
            for i in 0..<nonReaders {
                let connection = try RawConnection(port: port, receiveBuffer: 4096)
                _ = try await connection.upgrade()
                try connection.send(WebSocketWire.text(#"{"type":"hello","client":"\#(kind)-stalled-\#(i)"}"#))
                try connection.send(
                    WebSocketWire.text(#"{"type":"subscribe","channel":"EmergenciesOfKind","params":{"kind":"\#(kind)"}}"#))
                stalled.append(connection)
            }
            defer { _ = stalled }
            print(
                "\(subscribers) subscribers\(nonReaders > 0 ? " and \(nonReaders) that never read" : "") ready; "
                    + "publishing \(rate) events/s for \(warmup) s warm-up + \(duration) s")
            let window = Mutex<(cpu: Double, wall: ContinuousClock.Instant, machine: MachineCPU?, switches: Int)>((0, .now, nil, 0))
            try await Self.connect(webSocketURL, logger: logger) { inbound, outbound, _ in
                try await outbound.write(.text(#"{"type":"hello","client":"\#(kind)-publisher"}"#))
                let drain = Task { for try await _ in inbound.messages(maxSize: 1 << 20) {} }
                let interval = 1.0 / Double(rate)
                let start = ContinuousClock.now
                var n = 0
                let total = Int((warmup + duration) * Double(rate))
                let warm = Int(warmup * Double(rate))
                while n < total {
                    if n == warm {
                        let cpu = serverPID.map(Self.cpuSeconds) ?? 0
                        let switches = serverPID.map(Self.contextSwitches) ?? 0
                        window.withLock { $0 = (cpu, ContinuousClock.now, MachineCPU.read(), switches) }
                        samples.windowStart.store(Self.monotonicNanos(), ordering: .relaxed)
                    }
                    let due = start + .seconds(Double(n) * interval)
                    if due > ContinuousClock.now { try await Task.sleep(until: due) }
                    let event = #"{"kind":"\#(kind)","severity":3,"location":{"lat":52.0,"lon":4.0},"area":"bench","description":"t\#(Self.monotonicNanos())","time":1763900000000}"#
                    try await outbound.write(.text(#"{"type":"publish","stream":"emergencies","event":\#(event)}"#))
                    if n >= warm { samples.published.add(1, ordering: .relaxed) }
                    n += 1
                }
                samples.windowEnd.store(Self.monotonicNanos(), ordering: .relaxed)
                drain.cancel()
            }
            // CPU over the publishing window; then give the last notifications time to arrive.
            let (cpuStart, wallStart, machineStart, switchesStart) = window.withLock { $0 }
            let wall = (ContinuousClock.now - wallStart).seconds
            let cpu = (serverPID.map(Self.cpuSeconds) ?? 0) - cpuStart
            let switches = (serverPID.map(Self.contextSwitches) ?? 0) - switchesStart
            let machine = MachineCPU.read().flatMap { end in machineStart.map { end.summary(since: $0) } }
            // Deliveries later than this settle time count as missing.
            try await Task.sleep(for: .seconds(2))
            samples.stop.store(true, ordering: .relaxed)
            try await clients.close()
            let latencies = samples.latencies.withLock { $0 }.sorted()
            let delivered = samples.delivered.load(ordering: .relaxed)
            let expected = samples.published.load(ordering: .relaxed) * subscribers
            print("delivered \(delivered) of \(expected) expected notifications (\(expected - delivered) missing after a 2 s settle)")
            print("publish→notify latency: " + Self.percentiles(latencies))
            if serverPID != nil {
                let perDelivery = delivered > 0 ? cpu / Double(delivered) * 1e6 : 0
                print(
                    String(
                        format: "server CPU: %.2f s over %.1f s wall (%.0f%% of one core); %.2f µs per delivered notification",
                        cpu, wall, cpu / wall * 100, perDelivery))
                let events = max(samples.published.load(ordering: .relaxed), 1)
                print(
                    String(
                        format: "server context switches: %.1f per published event (%.0f/s, all threads)", Double(switches) / Double(events),
                        Double(switches) / wall))
            }
            if let machine { print(machine) }
            if let pid = serverPID, let memory = Self.residentMemory(pid) {
                print("server memory: \(memory.current / 1024) MiB resident, peak \(memory.peak / 1024) MiB")
            }
        } catch {
            try? await clients.close()
            throw error
        }
    }

    // MARK: Throughput

    func throughput(webSocketURL: String, serverPID: Int32?, logger: Logger) async throws {
        let state = Samples()
        let window = inFlight
        let keyed = keys
        let run = UInt32.random(in: 0...UInt32.max)
        let pace = window == 1 ? "one event at a time each" : "each with up to \(window) publishes in flight"
        print("\(publishers) publisher(s), \(pace)\(keyed ? ", every publish keyed" : ""), for \(warmup) s warm-up + \(duration) s")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in 0..<publishers {
                group.addTask {
                    try await Self.connect(webSocketURL, logger: logger) { inbound, outbound, _ in
                        var iterator = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                        var local: [Int64] = []
                        var n = 0
                        // Start times of the unanswered publishes; replies come in request order.
                        var sent: [Int64] = []
                        var answered = 0
                        let event = #"{"kind":"tp-\#(p)","severity":1,"location":{"lat":1.0,"lon":2.0},"area":"tp","time":1763900000000}"#
                        while true {
                            while sent.count - answered < window && !state.finished.load(ordering: .relaxed) {
                                n += 1
                                sent.append(Self.monotonicNanos())
                                let key = keyed ? #","key":"p\#(p)-\#(n)-\#(run)""# : ""
                                try await outbound.write(.text(#"{"type":"publish","id":"\#(n)","stream":"emergencies"\#(key),"event":\#(event)}"#))
                            }
                            guard answered < sent.count else { break }
                            let start = sent[answered]
                            answered += 1
                            guard case .text(let reply)? = try await iterator.next(), reply.hasPrefix(#"{"type":"published""#) else {
                                throw ValidationError("publish failed")
                            }
                            if state.measuring.load(ordering: .relaxed) {
                                local.append(Self.monotonicNanos() - start)
                                state.delivered.add(1, ordering: .relaxed)
                            }
                        }
                        state.latencies.withLock { $0 += local }
                    }
                }
            }
            try await Task.sleep(for: .seconds(warmup))
            let machineStart = MachineCPU.read()
            let cpuStart = serverPID.map(Self.cpuSeconds) ?? 0
            let wallStart = ContinuousClock.now
            state.measuring.store(true, ordering: .relaxed)
            try await Task.sleep(for: .seconds(duration))
            state.measuring.store(false, ordering: .relaxed)
            let wall = (ContinuousClock.now - wallStart).seconds
            let cpu = (serverPID.map(Self.cpuSeconds) ?? 0) - cpuStart
            let machine = MachineCPU.read().flatMap { end in machineStart.map { end.summary(since: $0) } }
            state.finished.store(true, ordering: .relaxed)
            try await group.waitForAll()
            let count = state.delivered.load(ordering: .relaxed)
            print(String(format: "durable publishes: %d in %.1f s = %.0f events/s", count, wall, Double(count) / wall))
            print("publish→published latency: " + Self.percentiles(state.latencies.withLock { $0 }.sorted()))
            if serverPID != nil {
                print(String(format: "server CPU: %.2f s (%.1f µs per event)", cpu, count > 0 ? cpu / Double(count) * 1e6 : 0))
            }
            if let machine { print(machine) }
        }
    }

    // MARK: Helpers

    /// A WebSocket connection for the duration of `handler`. The client library reports a
    /// connection its handler closed while a read was pending as cancelled; that is the normal
    /// end of a benchmark connection here, not a failure.
    static func connect(
        _ url: String, logger: Logger, _ handler: @escaping WebSocketDataHandler<WebSocketClient.Context>
    ) async throws {
        do {
            try await WebSocketClient.connect(url: url, logger: logger, handler: handler)
        } catch is CancellationError {}
    }

    static func percentiles(_ sorted: [Int64]) -> String {
        guard !sorted.isEmpty else { return "no samples" }
        func at(_ q: Double) -> String {
            let v = sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
            return String(format: "%.3f ms", Double(v) / 1e6)
        }
        return "p50 \(at(0.5)), p90 \(at(0.9)), p99 \(at(0.99)), p99.9 \(at(0.999)), max \(String(format: "%.3f ms", Double(sorted.last!) / 1e6)) (\(sorted.count) samples)"
    }

    static func monotonicNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// The publish time the benchmark put in the event's description ("t<nanos>").
    static func sentNanos(_ frame: String) -> Int64? {
        number(after: Array(#""description":"t"#.utf8), in: frame.utf8)
    }

    /// The decimal number right after the first occurrence of `pattern` in `bytes`. A byte
    /// scan: Foundation's range(of:) costs more than the rest of a notification's handling.
    static func number(after pattern: [UInt8], in bytes: some Collection<UInt8>) -> Int64? {
        bytes.withContiguousStorageIfAvailable { scanNumber(after: pattern, in: $0) }
            ?? Array(bytes).withUnsafeBufferPointer { scanNumber(after: pattern, in: $0) }
    }

    private static func scanNumber(after pattern: [UInt8], in bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        // A plain loop: the standard library's generic firstRange(of:) is ~10x slower here.
        guard let first = pattern.first, bytes.count >= pattern.count else { return nil }
        var i = 0
        while i + pattern.count <= bytes.count {
            if bytes[i] == first, bytes[i..<(i + pattern.count)].elementsEqual(pattern) {
                var j = i + pattern.count
                var value: Int64 = 0
                while j < bytes.count, bytes[j] >= 48, bytes[j] <= 57 {
                    value = value &* 10 &+ Int64(bytes[j] - 48)
                    j += 1
                }
                return j > i + pattern.count ? value : nil
            }
            i += 1
        }
        return nil
    }

    static func field(_ frame: String, _ name: String) -> String? {
        guard let r = frame.range(of: "\"\(name)\":") else { return nil }
        var rest = frame[r.upperBound...]
        if rest.first == "\"" {
            rest = rest.dropFirst()
            return String(rest.prefix { $0 != "\"" })
        }
        return String(rest.prefix { $0.isNumber })
    }

    /// Context switches (voluntary and not) of all of a process's threads so far, from
    /// /proc/PID/task/*/status: each is a thread going to sleep or being preempted, which on this
    /// VM costs tens of microseconds.
    /// VmRSS and VmHWM of a process, in KiB.
    static func residentMemory(_ pid: Int32) -> (current: Int, peak: Int)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func value(_ key: String) -> Int? {
            status.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
        }
        guard let current = value("VmRSS:"), let peak = value("VmHWM:") else { return nil }
        return (current, peak)
    }

    static func contextSwitches(_ pid: Int32) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var total = 0
        for task in tasks {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            for line in status.split(separator: "\n") where line.contains("ctxt_switches:") {
                total += Int(line.split(separator: "\t").last ?? "") ?? 0
            }
        }
        return total
    }

    /// User + system CPU seconds of a process, from /proc/PID/stat.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime field 14, stime field 15 (1-based over the whole line).
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The whole machine's CPU time (all CPUs, in clock ticks, from the first line of /proc/stat),
/// so a benchmark can say how much of it the hypervisor gave to other guests over its window
/// ("steal"): on a shared VM, steal is what turns a quiet run's 3 ms p99 into a noisy run's
/// 40 ms. (Busy and idle are not printed: on this VM they disagree with the processes' own CPU.)
struct MachineCPU {
    var total: Double
    var steal: Double

    static func read() -> MachineCPU? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return nil }
        // user nice system idle iowait irq softirq steal (guest time is already in user)
        let t = line.split(separator: " ").dropFirst().prefix(8).compactMap { Double($0) }
        guard t.count == 8 else { return nil }
        return MachineCPU(total: t.reduce(0, +), steal: t[7])
    }

    /// "machine: 0.7% of the CPU time was stolen by the hypervisor (2 CPUs)" over the interval since `start`.
    func summary(since start: MachineCPU) -> String {
        let total = max(self.total - start.total, 1)
        return String(
            format: "machine: %.1f%% of the CPU time was stolen by the hypervisor (%d CPUs)",
            (steal - start.steal) / total * 100, ProcessInfo.processInfo.activeProcessorCount)
    }
}
