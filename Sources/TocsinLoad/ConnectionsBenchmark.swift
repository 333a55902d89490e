import Foundation
import Logging
import Synchronization

/// Many connected, subscribed, idle clients on one broker, and a sample still receiving: what
/// each idle client costs the broker in resident memory, and the sample's publish → notify
/// latency among them. The idle clients are raw WebSocket connections (`RawSubscribers`) that
/// say hello with a client id of their own and hold a durable subscription to a kind nothing is
/// published to; the sample subscribes to the kind the publisher publishes.
///
/// This process's descriptor limit is raised for the run (and the spawned broker inherits it):
/// the benchmark's setup, not the product's.
public struct ConnectionsBenchmark: Sendable {
    public struct Configuration: Sendable {
        public var target: BenchTarget
        public var connections: Int
        public var sample: Int
        public var rate: Int
        public var duration: Double
        /// How far each idle client goes: the WebSocket upgrade only, `hello` too, or a
        /// subscription too (the default). The differences say where a connection's bytes go.
        public var stage: Stage

        public init(
            target: BenchTarget, connections: Int = 100_000, sample: Int = 100, rate: Int = 50, duration: Double = 10, stage: Stage = .subscribe
        ) {
            (self.target, self.connections, self.sample, self.rate, self.duration) = (target, connections, sample, rate, duration)
            self.stage = stage
        }
    }

    public enum Stage: String, Sendable, CaseIterable {
        case upgrade, hello, subscribe
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    public func run(logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> ConnectionsReport {
        let c = configuration
        try Self.raiseDescriptorLimit(to: c.connections + c.sample + 1_000)
        return try await MeasuredBrokers.with(c.target, progress: progress) { brokers in
            let broker = brokers.endpoints[0]
            let server = brokers.figures
            let before = server?.residentMemory?.current
            let tag = UInt32.random(in: 0...UInt32.max)
            let idleSamples = LatencySamples()
            progress("connecting \(c.connections) idle subscribers")
            let connectStart = ContinuousClock.now
            let stage = c.stage
            let idle = try await RawSubscribers.connect(
                host: broker.host, port: broker.port, count: c.connections, client: { stage == .upgrade ? "" : "idle-\(tag)-\($0)" },
                subscribe: { _ in
                    stage == .subscribe ? #"{"type":"subscribe","id":"s","channel":"EmergenciesOfKind","params":{"kind":"idle-\#(tag)"}}"# : ""
                }, fetch: false, ackEvery: 1000, samples: idleSamples, parallel: 256)
            let ready: @Sendable () -> Int = {
                stage == .subscribe ? idleSamples.subscribed.load(ordering: .relaxed) : idleSamples.upgraded.load(ordering: .relaxed)
            }
            guard try await poll(timeout: .seconds(max(60, Double(c.connections) / 500)), every: .milliseconds(100), { ready() >= c.connections })
            else {
                try? await idle.close()
                throw BenchError(
                    "only \(ready()) of \(c.connections) idle clients got through \(stage.rawValue)"
                        + (idleSamples.errorSummary.map { " (\($0))" } ?? ""))
            }
            let connectTime = (ContinuousClock.now - connectStart).inSeconds
            progress(String(format: "%d idle clients through %@ in %.1f s", c.connections, stage.rawValue, connectTime))
            // Let the broker settle (buffers freed, tasks parked) before reading its memory.
            try await Task.sleep(for: .seconds(3))
            let connected = server?.residentMemory?.current
            let samples = LatencySamples()
            let sample = try await RawSubscribers.connect(
                host: broker.host, port: broker.port, count: c.sample, kind: "sample-\(tag)", ackEvery: 100, samples: samples)
            guard try await poll(timeout: .seconds(60), every: .milliseconds(20), { samples.subscribed.load(ordering: .relaxed) >= c.sample })
            else { throw BenchError("the sample did not subscribe within 60 s") }
            progress("publishing \(c.rate) events/s to the sample of \(c.sample) for 2 s warm-up + \(c.duration) s")
            let published = try await publishTimed(
                to: broker.webSocketURL, logger: logger, kind: "sample-\(tag)", rate: c.rate, warmup: 2, duration: c.duration
            ) { samples.windowStart.store(Monotonic.nanos(), ordering: .relaxed) }
            samples.windowEnd.store(Monotonic.nanos(), ordering: .relaxed)
            try await Task.sleep(for: .seconds(2))
            samples.stop.store(true, ordering: .relaxed)
            let after = server?.residentMemory
            try await sample.close()
            let client = ProcessFigures.current.residentMemory?.current
            try await idle.close()
            return ConnectionsReport(
                stage: stage, connections: c.connections, connectSeconds: connectTime, sample: c.sample, published: published,
                delivered: samples.delivered.load(ordering: .relaxed), latency: LatencyDistribution(samples.latencies.withLock { $0 }),
                residentBeforeKiB: before, residentConnectedKiB: connected, residentAfterKiB: after?.current, peakKiB: after?.peak,
                clientResidentKiB: client)
        }
    }

    /// Raises RLIMIT_NOFILE's soft limit to `wanted` descriptors (the hard limit too, when this
    /// process may: root with CAP_SYS_RESOURCE); the spawned broker inherits it. Says how many
    /// connections the limit allows when it cannot be raised far enough.
    static func raiseDescriptorLimit(to wanted: Int) throws {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(wanted) else { return }
        var raised = limit
        raised.rlim_max = max(limit.rlim_max, rlim_t(wanted))
        raised.rlim_cur = rlim_t(wanted)
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return }
        // Not allowed past the hard limit: as far as it goes.
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        throw BenchError(
            "each process needs about \(wanted) descriptors (a connection takes one in the load generator and one in the broker), "
                + "but the hard limit is \(limit.rlim_max) and this process may not raise it (it needs CAP_SYS_RESOURCE); "
                + "use --connections \(Int(limit.rlim_max) - 1_000) or fewer, or raise the hard limit (ulimit -Hn) first")
    }
}

/// What `tocsin bench connections` prints.
public struct ConnectionsReport: Sendable, CustomStringConvertible {
    public var stage: ConnectionsBenchmark.Stage
    public var connections: Int
    public var connectSeconds: Double
    public var sample: Int
    public var published: Int
    public var delivered: Int
    public var latency: LatencyDistribution
    public var residentBeforeKiB: Int?
    public var residentConnectedKiB: Int?
    public var residentAfterKiB: Int?
    public var peakKiB: Int?
    public var clientResidentKiB: Int?

    public var description: String {
        var lines = [
            String(format: "%d idle clients through %@ in %.1f s (%.0f/s)", connections, stage.rawValue, connectSeconds, Double(connections) / connectSeconds)
        ]
        if let before = residentBeforeKiB, let connected = residentConnectedKiB {
            lines.append(
                String(
                    format: "server resident memory: %.1f MiB before, %.1f MiB with them: %.2f KiB per idle client",
                    Double(before) / 1024, Double(connected) / 1024, Double(connected - before) / Double(connections)))
        }
        if let after = residentAfterKiB, let peak = peakKiB {
            lines.append(String(format: "after publishing to the sample: %.1f MiB resident, peak %.1f MiB", Double(after) / 1024, Double(peak) / 1024))
            // Settled: the broker has handed back what the connection burst freed (`MemoryTrim`, every 10 s).
            if let before = residentBeforeKiB {
                lines.append(String(format: "settled: %.2f KiB per idle client", Double(after - before) / Double(connections)))
            }
        }
        let expected = published * sample
        lines.append("sample of \(sample): delivered \(delivered) of \(expected) expected notifications (\(expected - delivered) missing after a 2 s settle)")
        lines.append("sample publish→notify latency: \(latency)")
        if let client = clientResidentKiB { lines.append(String(format: "load generator resident memory: %.1f MiB", Double(client) / 1024)) }
        return lines.joined(separator: "\n")
    }
}
