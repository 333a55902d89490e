import Foundation
import Logging
import Synchronization
import WSClient

/// Durable publish throughput: P publishers, each on its own WebSocket connection with up to
/// `inFlight` publishes unanswered, each waiting for its `published` reply (the event is stored).
/// With several brokers (spawned on one PostgreSQL store) publisher p publishes to broker p mod N.
public struct ThroughputBenchmark: Sendable {
    public struct Configuration: Sendable {
        public var target: BenchTarget
        public var publishers: Int
        /// Publishes each publisher keeps unanswered on its connection.
        public var inFlight: Int
        /// Give every publish a key (idempotent publishing), so each also checks and records it.
        public var keys: Bool
        /// Events per publish (`events: [...]`); the figures count events.
        public var batch: Int
        /// Seconds measured, after the warm-up.
        public var duration: Double
        /// Seconds of warm-up, not measured.
        public var warmup: Double

        public init(
            target: BenchTarget, publishers: Int = 1, inFlight: Int = 1, keys: Bool = false, batch: Int = 1, duration: Double = 10,
            warmup: Double = 2
        ) {
            (self.target, self.publishers, self.inFlight, self.keys, self.batch) = (target, publishers, inFlight, keys, batch)
            (self.duration, self.warmup) = (duration, warmup)
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    /// Runs the benchmark; `progress` gets a line as each stage starts.
    public func run(logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> ThroughputReport {
        try await MeasuredBrokers.with(configuration.target, progress: progress) { try await measure($0, logger: logger, progress: progress) }
    }

    private func measure(_ brokers: MeasuredBrokers, logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> ThroughputReport {
        let c = configuration
        let state = State()
        let server = brokers.figures
        let endpoints = brokers.endpoints
        let run = UInt32.random(in: 0...UInt32.max)
        let pace = c.inFlight == 1 ? "one publish at a time each" : "each with up to \(c.inFlight) publishes in flight"
        let batch = c.batch > 1 ? ", \(c.batch) events per publish" : ""
        progress("\(c.publishers) publisher(s), \(pace)\(batch)\(c.keys ? ", every publish keyed" : ""), for \(c.warmup) s warm-up + \(c.duration) s")
        if endpoints.count > 1 { progress("publishers spread round-robin over \(endpoints.count) brokers: \(endpoints.map(\.description).joined(separator: ", "))") }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for p in 0..<c.publishers {
                group.addTask {
                    try await webSocket(endpoints[p % endpoints.count].webSocketURL, logger: logger) { inbound, outbound, _ in
                        var iterator = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                        var local: [Int64] = []
                        var n = 0
                        // Start times of the unanswered publishes; replies come in request order.
                        var sent: [Int64] = []
                        var replies = 0
                        let one = #"{"kind":"tp-\#(p)","severity":1,"location":{"lat":1.0,"lon":2.0},"area":"tp","time":1763900000000}"#
                        let events = c.batch > 1 ? #""events":[\#(Array(repeating: one, count: c.batch).joined(separator: ","))]"# : #""event":\#(one)"#
                        while true {
                            while sent.count - replies < c.inFlight && !state.finished.load(ordering: .relaxed) {
                                n += 1
                                sent.append(Monotonic.nanos())
                                let key = c.keys ? #","key":"p\#(p)-\#(n)-\#(run)""# : ""
                                try await outbound.write(.text(#"{"type":"publish","id":"\#(n)","stream":"emergencies"\#(key),\#(events)}"#))
                            }
                            guard replies < sent.count else { break }
                            let start = sent[replies]
                            replies += 1
                            guard case .text(let reply)? = try await iterator.next(), reply.hasPrefix(#"{"type":"published""#) else {
                                throw BenchError("publish failed")
                            }
                            if state.measuring.load(ordering: .relaxed) {
                                local.append(Monotonic.nanos() - start)
                                state.answered.add(c.batch, ordering: .relaxed)
                            }
                        }
                        state.latencies.withLock { $0 += local }
                    }
                }
            }
            try await Task.sleep(for: .seconds(c.warmup))
            let machineStart = MachineCPU.read()
            let cpuStart = server?.cpuSeconds ?? 0
            let databaseStart = brokers.database?.read()
            let wallStart = ContinuousClock.now
            state.measuring.store(true, ordering: .relaxed)
            try await Task.sleep(for: .seconds(c.duration))
            state.measuring.store(false, ordering: .relaxed)
            let wall = (ContinuousClock.now - wallStart).inSeconds
            let cpu = server.map { $0.cpuSeconds - cpuStart }
            let databaseCPU = brokers.database.flatMap { database in databaseStart.map { ProcessTreeCPU.seconds(from: $0, to: database.read()) } }
            let machine = MachineSteal(from: machineStart, to: MachineCPU.read())
            state.finished.store(true, ordering: .relaxed)
            try await group.waitForAll()
            return ThroughputReport(
                published: state.answered.load(ordering: .relaxed), wallSeconds: wall, latency: LatencyDistribution(state.latencies.withLock { $0 }),
                serverCPUSeconds: cpu, brokers: server?.count ?? 1, databaseCPUSeconds: databaseCPU, machine: machine)
        }
    }
}

/// What the publishers share while they run.
private final class State: Sendable {
    let latencies = Mutex<[Int64]>([])
    let answered = Atomic<Int>(0)
    let measuring = Atomic<Bool>(false)
    let finished = Atomic<Bool>(false)
}

/// What a throughput benchmark measured; its description is what `tocsin bench throughput` prints.
public struct ThroughputReport: Sendable, CustomStringConvertible {
    /// Events of the publishes answered `published` in the measured window.
    public var published: Int
    public var wallSeconds: Double
    /// Publish→published latency.
    public var latency: LatencyDistribution
    /// The spawned brokers' CPU seconds over the window, summed (nil for a broker given by URL).
    public var serverCPUSeconds: Double?
    /// How many brokers `serverCPUSeconds` sums.
    public var brokers = 1
    /// The throwaway PostgreSQL server's CPU seconds over the window (nil without one).
    public var databaseCPUSeconds: Double? = nil
    public var machine: MachineSteal?

    public var eventsPerSecond: Double { Double(published) / wallSeconds }

    public var description: String {
        var lines = [
            String(format: "durable publishes: %d in %.1f s = %.0f events/s", published, wallSeconds, eventsPerSecond),
            "publish→published latency: \(latency)",
        ]
        if let cpu = serverCPUSeconds {
            let who = brokers > 1 ? "servers (\(brokers) brokers, summed)" : "server"
            lines.append("\(who) CPU: " + String(format: "%.2f s (%.1f µs per event)", cpu, published > 0 ? cpu / Double(published) * 1e6 : 0))
        }
        if let cpu = databaseCPUSeconds {
            lines.append(String(format: "PostgreSQL CPU: %.2f s (%.1f µs per event)", cpu, published > 0 ? cpu / Double(published) * 1e6 : 0))
        }
        if let machine { lines.append(machine.description) }
        return lines.joined(separator: "\n")
    }
}
