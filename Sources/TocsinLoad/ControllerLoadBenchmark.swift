import Foundation
import Synchronization
import TocsinCore
import TocsinDev
import TocsinHTTPClient

/// A real `tocsin controller` under the heartbeats of many simulated brokers: N brokers
/// register over HTTP, then each heartbeats once a second (N heartbeats a second in all, spread
/// evenly), while clients ask for assignments. Measures each heartbeat's and assignment's round
/// trip and the controller's CPU per heartbeat. With `postgres`, the controller keeps its state
/// in a throwaway, durable PostgreSQL (`--store`) and leads through its lease there.
public struct ControllerLoadBenchmark: Sendable {
    public struct Configuration: Sendable {
        public var executable: String
        public var brokers: Int
        public var duration: Double
        public var assignsPerSecond: Int
        public var postgres: Bool

        public init(executable: String, brokers: Int = 1000, duration: Double = 10, assignsPerSecond: Int = 200, postgres: Bool = false) {
            (self.executable, self.brokers, self.duration, self.assignsPerSecond, self.postgres) = (executable, brokers, duration, assignsPerSecond, postgres)
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    private final class Samples: Sendable {
        let heartbeats = Mutex<[Int64]>([])
        /// Each simulated broker's discovery list version, reported back as a broker does.
        let versions = Mutex<[Int: Int64]>([:])
        let assigns = Mutex<[Int64]>([])
        let failures = Atomic<Int>(0)
        let reregistered = Atomic<Int>(0)
        let firstFailure = Mutex<String?>(nil)

        func failed(_ error: any Error) {
            failures.add(1, ordering: .relaxed)
            firstFailure.withLock { $0 = $0 ?? "\(error)" }
        }
    }

    public func run(progress: @escaping @Sendable (String) -> Void) async throws -> ControllerLoadReport {
        let c = configuration
        let database = c.postgres ? try await PostgresServer.start(durable: true, settings: ["fsync=on", "synchronous_commit=on"]) : nil
        defer { database?.destroy() }
        if let database { progress("started a durable throwaway PostgreSQL on port \(database.port)") }
        let controller = try await ChildProcess(
            executable: c.executable,
            arguments: ["controller", "--insecure-no-auth", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]
                + (database.map { ["--store", $0.url(host: "127.0.0.1")] } ?? []))
        defer {
            _ = controller.signal(SIGTERM)
            _ = controller.waitForExit()
        }
        let url = "http://127.0.0.1:\(controller.port)"
        progress("spawned \(c.executable) controller (pid \(controller.pid)) on port \(controller.port)\(c.postgres ? " with --store" : "")")
        let client = ControllerClient(url: url)
        let samples = Samples()
        // On PostgreSQL the controller takes registrations once it holds the lease: wait for that.
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                let reply = try await client.register(ControllerScaleBenchmark.request(0, region: 0))
                if let version = reply.viewVersion { samples.versions.withLock { $0[0] = version } }
                break
            } catch let error as TocsinError where error.code == .notLeader && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        // Register, 32 at a time (each keeps the list's version its reply carried, as a broker does).
        let registerStart = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<32 {
                group.addTask {
                    for i in stride(from: worker, to: c.brokers, by: 32) {
                        let reply = try await client.register(ControllerScaleBenchmark.request(i, region: i % 10))
                        if let version = reply.viewVersion { samples.versions.withLock { $0[i] = version } }
                    }
                }
            }
            try await group.waitForAll()
        }
        let registerSeconds = (ContinuousClock.now - registerStart).inSeconds
        progress(String(format: "%d brokers registered in %.1f s; heartbeating each once a second for %.0f s", c.brokers, registerSeconds, c.duration))
        let figures = ProcessFigures(pid: controller.pid)
        let databaseCPU = database?.postmasterPID.map(ProcessTreeCPU.init(root:))
        let databaseStart = databaseCPU?.read()
        let cpuStart = figures.cpuSeconds
        let start = ContinuousClock.now + .milliseconds(200)
        let rounds = Int(c.duration)
        let share = 10_000_000 / c.brokers
        try await withThrowingTaskGroup(of: Void.self) { group in
            let workers = 64
            for worker in 0..<workers {
                group.addTask {
                    for round in 0..<rounds {
                        for i in stride(from: worker, to: c.brokers, by: workers) {
                            let due = start + .seconds(Double(round) + Double(i) / Double(c.brokers))
                            if due > ContinuousClock.now { try await Task.sleep(until: due) }
                            let sent = Monotonic.nanos()
                            do {
                                let known = samples.versions.withLock { $0[i] }
                                let reply = try await client.heartbeat(
                                    id: "broker-\(i + 1)", incarnation: "i\(i)",
                                    report: HeartbeatReport(load: BrokerLoad(connections: share), viewVersion: known), timeout: .seconds(10))
                                let took = Monotonic.nanos() - sent
                                if reply.cluster != nil, let version = reply.viewVersion { samples.versions.withLock { $0[i] = version } }
                                samples.heartbeats.withLock { $0.append(took) }
                            } catch let error as TocsinError where error.code == .unknownBroker {
                                // Its lease ran out (registering 1,000 takes a while): it registers again, as a broker does.
                                samples.reregistered.add(1, ordering: .relaxed)
                                samples.firstFailure.withLock { $0 = $0 ?? "refused: \(error.message)" }
                                if let reply = try? await client.register(ControllerScaleBenchmark.request(i, region: i % 10)), let version = reply.viewVersion {
                                    samples.versions.withLock { $0[i] = version }
                                }
                            } catch {
                                samples.failed(error)
                            }
                        }
                    }
                }
            }
            if c.assignsPerSecond > 0 {
                group.addTask {
                    let total = rounds * c.assignsPerSecond
                    for n in 0..<total {
                        let due = start + .seconds(Double(n) / Double(c.assignsPerSecond))
                        if due > ContinuousClock.now { try await Task.sleep(until: due) }
                        let sent = Monotonic.nanos()
                        do {
                            _ = try await client.assign(AssignmentRequest(clientID: "client-\(n)"), timeout: .seconds(10))
                            let took = Monotonic.nanos() - sent
                            samples.assigns.withLock { $0.append(took) }
                        } catch {
                            samples.failed(error)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let wall = (ContinuousClock.now - start).inSeconds
        let cpu = figures.cpuSeconds - cpuStart
        let databaseSeconds = databaseCPU.flatMap { tree in databaseStart.map { ProcessTreeCPU.seconds(from: $0, to: tree.read()) } }
        try? await client.shutdown()
        return ControllerLoadReport(
            brokers: c.brokers, postgres: c.postgres, registerSeconds: registerSeconds, wallSeconds: wall,
            heartbeats: LatencyDistribution(samples.heartbeats.withLock { $0 }), assigns: LatencyDistribution(samples.assigns.withLock { $0 }),
            failures: samples.failures.load(ordering: .relaxed), firstFailure: samples.firstFailure.withLock { $0 },
            reregistered: samples.reregistered.load(ordering: .relaxed), controllerCPUSeconds: cpu, databaseCPUSeconds: databaseSeconds,
            controllerMemoryKiB: figures.residentMemory?.current)
    }
}

/// What `tocsin bench controller --spawn` prints.
public struct ControllerLoadReport: Sendable, CustomStringConvertible {
    public var brokers: Int
    public var postgres: Bool
    public var registerSeconds: Double
    public var wallSeconds: Double
    public var heartbeats: LatencyDistribution
    public var assigns: LatencyDistribution
    public var failures: Int
    public var firstFailure: String?
    /// Heartbeats answered "unknown broker" (its lease had run out), after which it registered again.
    public var reregistered: Int
    public var controllerCPUSeconds: Double
    public var databaseCPUSeconds: Double?
    public var controllerMemoryKiB: Int?

    public var description: String {
        var lines = [
            String(
                format: "%d simulated brokers%@: registered in %.1f s; %d heartbeats answered in %.1f s (%.0f/s), %d refused as expired (registered again), %d failed",
                brokers, postgres ? " (controller on PostgreSQL)" : "", registerSeconds, heartbeats.count, wallSeconds,
                Double(heartbeats.count) / wallSeconds, reregistered, failures),
            "heartbeat round trip: \(heartbeats)",
            "assign round trip: \(assigns)",
            String(
                format: "controller CPU: %.2f s over %.1f s (%.0f%% of one core); %.1f µs per request", controllerCPUSeconds, wallSeconds,
                controllerCPUSeconds / wallSeconds * 100, controllerCPUSeconds / Double(max(1, heartbeats.count + assigns.count)) * 1e6),
        ]
        if let firstFailure { lines.append("first failure: \(firstFailure)") }
        if let databaseCPUSeconds {
            lines.append(String(format: "PostgreSQL CPU: %.2f s (%.0f%% of one core)", databaseCPUSeconds, databaseCPUSeconds / wallSeconds * 100))
        }
        if let controllerMemoryKiB { lines.append("controller resident memory: \(controllerMemoryKiB / 1024) MiB") }
        return lines.joined(separator: "\n")
    }
}
