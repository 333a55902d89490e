import Foundation
import Logging
import Synchronization
import TocsinDev
import WSClient

/// Delivery latency and the broker's CPU per delivery: N raw WebSocket subscribers of one channel
/// (`RawSubscribers`), optionally some more that never read (slow consumers), and one publisher at
/// a fixed rate. Events published in the measured window (after the warm-up) count; a delivery
/// later than a 2 s settle counts as missing. With several brokers (spawned on one PostgreSQL
/// store) the subscribers are on the first and the publisher on the last, so every notification
/// crosses brokers through the store (its commit, then the subscribers' broker woken by
/// LISTEN/NOTIFY, reading it back).
public struct LatencyBenchmark: Sendable {
    public struct Configuration: Sendable {
        public var target: BenchTarget
        public var subscribers: Int
        /// Events per second.
        public var rate: Int
        /// Subscribers of the same events that never read their socket.
        public var nonReaders: Int
        /// Seconds measured, after the warm-up.
        public var duration: Double
        /// Seconds of warm-up, not measured.
        public var warmup: Double

        public init(
            target: BenchTarget, subscribers: Int = 100, rate: Int = 500, nonReaders: Int = 0, duration: Double = 10, warmup: Double = 2
        ) {
            (self.target, self.subscribers, self.rate, self.nonReaders) = (target, subscribers, rate, nonReaders)
            (self.duration, self.warmup) = (duration, warmup)
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    /// Runs the benchmark; `progress` gets a line as each stage starts.
    public func run(logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> LatencyReport {
        try await MeasuredBrokers.with(configuration.target, progress: progress) { try await measure($0, logger: logger, progress: progress) }
    }

    private func measure(_ brokers: MeasuredBrokers, logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> LatencyReport {
        let c = configuration
        let samples = LatencySamples()
        let published = Counter()
        let kind = "bench-\(UInt32.random(in: 0...UInt32.max))"
        let server = brokers.figures
        let (broker, publishTo) = (brokers.endpoints[0], brokers.endpoints[brokers.endpoints.count - 1])
        if brokers.endpoints.count > 1 {
            progress("subscribers on \(broker.description), the publisher on \(publishTo.description): every notification crosses brokers through the store")
        }
        let clients = try await RawSubscribers.connect(
            host: broker.host, port: broker.port, count: c.subscribers, kind: kind, ackEvery: 100, samples: samples)
        do {
            guard try await poll(timeout: .seconds(60), every: .milliseconds(20), { samples.subscribed.load(ordering: .relaxed) >= c.subscribers })
            else { throw BenchError("subscribers did not all subscribe within 60 s") }
            // Subscribers that never read: the broker must cut them off without the others noticing.
            var stalled: [RawConnection] = []
            for i in 0..<c.nonReaders {
                let connection = try RawConnection(host: broker.host, port: broker.port, receiveBuffer: 4096)
                _ = try await connection.upgrade()
                try connection.send(WebSocketWire.text(#"{"type":"hello","client":"\#(kind)-stalled-\#(i)"}"#))
                try connection.send(
                    WebSocketWire.text(#"{"type":"subscribe","channel":"EmergenciesOfKind","params":{"kind":"\#(kind)"}}"#))
                stalled.append(connection)
            }
            defer { _ = stalled }
            progress(
                "\(c.subscribers) subscribers\(c.nonReaders > 0 ? " and \(c.nonReaders) that never read" : "") ready; "
                    + "publishing \(c.rate) events/s for \(c.warmup) s warm-up + \(c.duration) s")
            let window = Window()
            let count = try await publishTimed(
                to: publishTo.webSocketURL, logger: logger, kind: kind, rate: c.rate, warmup: c.warmup, duration: c.duration
            ) {
                let cpu = server?.cpuSeconds ?? 0
                let switches = server?.contextSwitches ?? 0
                let database = brokers.database?.read()
                window.start.withLock { $0 = (cpu, ContinuousClock.now, MachineCPU.read(), switches) }
                window.database.withLock { $0 = database }
                samples.windowStart.store(Monotonic.nanos(), ordering: .relaxed)
            }
            published.value.store(count, ordering: .relaxed)
            samples.windowEnd.store(Monotonic.nanos(), ordering: .relaxed)
            // CPU over the publishing window; then give the last notifications time to arrive.
            let (cpuStart, wallStart, machineStart, switchesStart) = window.start.withLock { $0 }
            let wall = (ContinuousClock.now - wallStart).inSeconds
            let serverFigures = server.map {
                LatencyReport.Server(cpuSeconds: $0.cpuSeconds - cpuStart, wallSeconds: wall, contextSwitches: $0.contextSwitches - switchesStart)
            }
            let machine = MachineSteal(from: machineStart, to: MachineCPU.read())
            let databaseStart = window.database.withLock { $0 }
            let databaseCPU = brokers.database.flatMap { database in databaseStart.map { ProcessTreeCPU.seconds(from: $0, to: database.read()) } }
            // Deliveries later than this settle time count as missing.
            try await Task.sleep(for: .seconds(2))
            samples.stop.store(true, ordering: .relaxed)
            try await clients.close()
            return LatencyReport(
                subscribers: c.subscribers, published: published.value.load(ordering: .relaxed), delivered: samples.delivered.load(ordering: .relaxed),
                latency: LatencyDistribution(samples.latencies.withLock { $0 }), server: serverFigures, brokers: server?.count ?? 1,
                databaseCPUSeconds: databaseCPU, machine: machine,
                serverMemory: server?.residentMemory.map { LatencyReport.Memory(residentKiB: $0.current, peakKiB: $0.peak) })
        } catch {
            try? await clients.close()
            throw error
        }
    }
}

private final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// The figures at the start of the measured window.
private final class Window: Sendable {
    let start = Mutex<(cpu: Double, wall: ContinuousClock.Instant, machine: MachineCPU?, switches: Int)>((0, .now, nil, 0))
    /// The throwaway PostgreSQL server's processes' CPU ticks.
    let database = Mutex<[Int32: Int]?>(nil)
}

/// What a latency benchmark measured; its description is what `tocsin bench latency` prints.
public struct LatencyReport: Sendable, CustomStringConvertible {
    public struct Server: Sendable {
        /// The broker's CPU seconds over the publishing window.
        public var cpuSeconds: Double
        public var wallSeconds: Double
        /// Context switches of all its threads over the window.
        public var contextSwitches: Int
    }

    public struct Memory: Sendable {
        public var residentKiB: Int
        public var peakKiB: Int
    }

    public var subscribers: Int
    /// Events published in the measured window.
    public var published: Int
    /// Notifications of those events delivered within the settle time.
    public var delivered: Int
    public var latency: LatencyDistribution
    /// The spawned brokers' figures, summed (nil for a broker given by URL).
    public var server: Server?
    /// How many brokers `server` and `serverMemory` sum.
    public var brokers = 1
    /// The throwaway PostgreSQL server's CPU seconds over the publishing window (nil without one).
    public var databaseCPUSeconds: Double? = nil
    public var machine: MachineSteal?
    public var serverMemory: Memory?

    public var expected: Int { published * subscribers }

    /// The brokers' CPU time per delivered notification, in µs.
    public var cpuPerDelivery: Double? { server.map { delivered > 0 ? $0.cpuSeconds / Double(delivered) * 1e6 : 0 } }

    public var description: String {
        var lines = [
            "delivered \(delivered) of \(expected) expected notifications (\(expected - delivered) missing after a 2 s settle)",
            "publish→notify latency: \(latency)",
        ]
        // "server CPU: …" for one broker, "servers (2 brokers, summed) CPU: …" for more.
        let who = brokers > 1 ? "servers (\(brokers) brokers, summed)" : "server"
        if let server, let cpuPerDelivery {
            lines.append(
                who
                    + String(
                        format: " CPU: %.2f s over %.1f s wall (%.0f%% of one core); %.2f µs per delivered notification",
                        server.cpuSeconds, server.wallSeconds, server.cpuSeconds / server.wallSeconds * 100, cpuPerDelivery))
            let events = max(published, 1)
            lines.append(
                who
                    + String(
                        format: " context switches: %.1f per published event (%.0f/s, all threads)",
                        Double(server.contextSwitches) / Double(events), Double(server.contextSwitches) / server.wallSeconds))
        }
        if let cpu = databaseCPUSeconds, let wall = server?.wallSeconds {
            lines.append(
                String(
                    format: "PostgreSQL CPU: %.2f s over %.1f s wall (%.0f%% of one core); %.1f µs per published event", cpu, wall,
                    cpu / wall * 100, published > 0 ? cpu / Double(published) * 1e6 : 0))
        }
        if let machine { lines.append(machine.description) }
        if let serverMemory {
            lines.append("\(who) memory: \(serverMemory.residentKiB / 1024) MiB resident, peak \(serverMemory.peakKiB / 1024) MiB")
        }
        return lines.joined(separator: "\n")
    }
}

/// Publishes `kind` events to `emergencies` at `rate` a second over one WebSocket, each carrying
/// its send time (`description` "t" and monotonic nanoseconds, as `RawSubscribers` read it), for
/// `warmup + duration` seconds; `windowStarts` runs as the measured window starts. Returns how
/// many were published inside the window.
func publishTimed(
    to url: String, logger: Logger, kind: String, rate: Int, warmup: Double, duration: Double,
    windowStarts: @escaping @Sendable () -> Void
) async throws -> Int {
    let published = Counter()
    try await webSocket(url, logger: logger) { inbound, outbound, _ in
        try await outbound.write(.text(#"{"type":"hello","client":"\#(kind)-publisher"}"#))
        let drain = Task { for try await _ in inbound.messages(maxSize: 1 << 20) {} }
        let interval = 1.0 / Double(rate)
        let start = ContinuousClock.now
        var n = 0
        let total = Int((warmup + duration) * Double(rate))
        let warm = Int(warmup * Double(rate))
        while n < total {
            if n == warm { windowStarts() }
            let due = start + .seconds(Double(n) * interval)
            if due > ContinuousClock.now { try await Task.sleep(until: due) }
            let event = #"{"kind":"\#(kind)","severity":3,"location":{"lat":52.0,"lon":4.0},"area":"bench","description":"t\#(Monotonic.nanos())","time":1763900000000}"#
            try await outbound.write(.text(#"{"type":"publish","stream":"emergencies","event":\#(event)}"#))
            if n >= warm { published.value.add(1, ordering: .relaxed) }
            n += 1
        }
        drain.cancel()
    }
    return published.value.load(ordering: .relaxed)
}

/// A WebSocket connection for the duration of `handler`. The client library reports a
/// connection its handler closed while a read was pending as cancelled; that is the normal
/// end of a benchmark connection, not a failure.
func webSocket(
    _ url: String, logger: Logger, _ handler: @escaping WebSocketDataHandler<WebSocketClient.Context>
) async throws {
    do {
        try await WebSocketClient.connect(url: url, logger: logger, handler: handler)
    } catch is CancellationError {}
}
