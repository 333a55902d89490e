import Foundation
import Logging
import Synchronization
import TocsinClient
import TocsinDev

/// A local network of real processes (a controller and N brokers, `LocalNetwork`), S subscribers
/// of the client library spread over it by `assign` (an `Audience`), a publisher at a fixed rate
/// (a `Feed`), and optionally a broker killed with SIGKILL or a broker added mid-run.
public struct NetworkBenchmark: Sendable {
    public struct Configuration: Sendable {
        /// The `tocsin` executable the network runs.
        public var executable: String
        public var brokers: Int
        public var subscribers: Int
        /// Events per second.
        public var rate: Int
        /// Seconds of publishing.
        public var duration: Double
        /// SIGKILL the broker with the most clients this many seconds into publishing.
        public var killAt: Double?
        /// Start one more broker this many seconds into publishing.
        public var addAt: Double?
        public var noFsync: Bool

        public init(
            executable: String, brokers: Int = 3, subscribers: Int = 100, rate: Int = 500, duration: Double = 10, killAt: Double? = nil,
            addAt: Double? = nil, noFsync: Bool = false
        ) {
            (self.executable, self.brokers, self.subscribers, self.rate, self.duration) = (executable, brokers, subscribers, rate, duration)
            (self.killAt, self.addAt, self.noFsync) = (killAt, addAt, noFsync)
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    /// Runs the benchmark; `progress` gets a line as each stage starts and at the kill or addition.
    public func run(logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> NetworkReport {
        let directory = NSTemporaryDirectory() + "tocsin-bench-net-\(UUID().uuidString)"
        var networkConfiguration = LocalNetwork.Configuration(directory: directory)
        networkConfiguration.executable = configuration.executable
        networkConfiguration.brokers = configuration.brokers
        if configuration.noFsync { networkConfiguration.brokerArguments.append("--no-fsync") }
        let network = try await LocalNetwork(configuration: networkConfiguration)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        progress("network: controller \(network.controllerURL), \(network.members.map { "\($0.id) :\($0.port)" }.joined(separator: ", "))")
        do {
            let report = try await measure(network, logger: logger, progress: progress)
            await network.stop(signal: SIGKILL)
            return report
        } catch {
            await network.stop(signal: SIGKILL)
            throw error
        }
    }

    private func measure(_ network: LocalNetwork, logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> NetworkReport {
        let c = configuration
        let kind = "net-\(UInt32.random(in: 0...UInt32.max))"
        let seeds = [network.controllerURL]
        var audienceConfiguration = Audience.Configuration(count: c.subscribers, seeds: seeds, kind: kind)
        // Thousands of clients share this process and its two cores with the brokers: ack
        // once a second (acks are cumulative) rather than after every notification.
        audienceConfiguration.ackInterval = .seconds(1)
        let audience = Audience(configuration: audienceConfiguration, logger: logger)
        async let _ = audience.run()
        let connectStart = ContinuousClock.now
        guard try await poll(timeout: .seconds(120), every: .milliseconds(50), { audience.allConnected }) else {
            throw BenchError("timed out waiting for \(c.subscribers) subscribers to connect")
        }
        progress(String(format: "%d subscribers connected in %.1f s", c.subscribers, (ContinuousClock.now - connectStart).inSeconds))
        progress("clients per broker: " + NetworkReport.perBroker(audience.perBroker))

        // Publish at the rate for the duration; acknowledged seqs are what every subscriber must get.
        let cpuBefore = Self.cpu(network)
        let balancedAfter = Balance()
        var monitor: Task<Void, Never>?
        defer { monitor?.cancel() }
        progress(
            "publishing \(c.rate) events/s for \(c.duration) s" + (c.killAt.map { "; SIGKILL a broker at \($0) s" } ?? "")
                + (c.addAt.map { "; add a broker at \($0) s" } ?? ""))
        let start = ContinuousClock.now
        let feed = Feed(configuration: .init(seeds: seeds, kind: kind, rate: c.rate, limit: Int(c.duration * Double(c.rate))), logger: logger)
        async let publishing: Void = feed.run()
        // The kill and the addition, in time order, while the feed publishes.
        var killed: String?
        let moments = [c.killAt.map { ($0, true) }, c.addAt.map { ($0, false) }].compactMap { $0 }.filter { $0.0 < c.duration }
        for (at, isKill) in moments.sorted(by: { $0.0 < $1.0 }) {
            try await Task.sleep(until: start + .seconds(at))
            let elapsed = (ContinuousClock.now - start).inSeconds
            if isKill {
                // The broker with the most of our clients.
                let counts = audience.perBroker
                if let victim = counts.max(by: { $0.value < $1.value })?.key {
                    killed = victim
                    audience.noteCrash(of: victim)
                    await network.crash(victim)
                    progress(String(format: "t=%.1f s: SIGKILL %@ (%d clients)", elapsed, victim, counts[victim] ?? 0))
                }
            } else {
                let added = ContinuousClock.now
                let member = try await network.addBroker()
                let brokerCount = network.members.count
                // The first moment every broker is within 10% of the mean, as the clients see it.
                monitor = Task {
                    if (try? await poll(timeout: .seconds(3600), every: .milliseconds(20), {
                        NetworkReport.isBalanced(audience.perBroker, brokers: brokerCount)
                    })) == true {
                        balancedAfter.after.withLock { $0 = ContinuousClock.now - added }
                    }
                }
                progress(String(format: "t=%.1f s: added %@ on port %d", elapsed, member.id, member.port))
            }
        }
        await publishing
        let publishingWall = (ContinuousClock.now - start).inSeconds
        let cpuAfter = Self.cpu(network)
        let acknowledged = feed.acknowledged.withLock { $0 }
        let expected = Set(acknowledged)
        // Wait (bounded) for every subscriber to have every acknowledged event.
        let settled = (try? await poll(timeout: .seconds(30), every: .milliseconds(50), { audience.received(all: expected) })) ?? false
        if c.addAt != nil {
            _ = try? await poll(timeout: .seconds(30), every: .milliseconds(50)) { balancedAfter.after.withLock { $0 } != nil }
        }

        var report = NetworkReport(
            subscribers: c.subscribers, published: acknowledged.count, publishFailures: feed.failures.load(ordering: .relaxed),
            expected: expected.count * c.subscribers, settled: settled,
            duplicatesDropped: audience.subscribers.reduce(0) { $0 + $1.statistics.duplicatesDropped },
            perBrokerAtEnd: audience.perBroker,
            cpuPercent: cpuAfter.keys.sorted().map { name in
                (name, (cpuAfter[name, default: 0] - cpuBefore[name, default: 0]) / publishingWall * 100)
            })
        var latencies: [Int64] = []
        var notRecovered = 0
        var sinceKill: [Int64] = []
        let killedAt = audience.crash?.at
        for probe in audience.probes {
            let s = probe.snapshot
            let got = Set(s.seqs)
            report.delivered += got.intersection(expected).count
            report.lost += expected.subtracting(got).count
            report.outOfOrder += s.outOfOrder
            latencies += s.latencies
            if s.lostAt != nil {
                if let back = s.recoveredAt, let killedAt { sinceKill.append(back - killedAt) } else { notRecovered += 1 }
            }
            if !s.moves.isEmpty { report.migrationPaths[s.moves.joined(separator: ", "), default: 0] += 1 }
        }
        report.latency = LatencyDistribution(latencies)
        if let killed {
            report.failover = .init(broker: killed, resumed: LatencyDistribution(sinceKill), notRecovered: notRecovered)
        }
        if c.addAt != nil {
            report.rebalance = .init(
                migrations: audience.subscribers.reduce(0) { $0 + $1.statistics.migrationsFollowed },
                balancedAfter: balancedAfter.after.withLock { $0 })
        }
        return report
    }

    /// CPU seconds so far of this process (the clients), the controller and each live broker.
    static func cpu(_ network: LocalNetwork) -> [String: Double] {
        var usage = ["bench clients": ProcessFigures.current.cpuSeconds, "controller": ProcessFigures(pid: network.controller.pid).cpuSeconds]
        for m in network.members { usage[m.id] = ProcessFigures(pid: m.pid).cpuSeconds }
        return usage
    }
}

/// From adding a broker to the first moment every broker is within 10% of the mean.
private final class Balance: Sendable {
    let after = Mutex<Duration?>(nil)
}

/// What a network benchmark measured; its description is what `tocsin bench network` prints
/// after the run.
public struct NetworkReport: Sendable, CustomStringConvertible {
    public struct Failover: Sendable {
        /// The broker killed.
        public var broker: String
        /// From the SIGKILL to each of its clients resumed on a survivor.
        public var resumed: LatencyDistribution
        /// Clients that lost it and have not recovered.
        public var notRecovered: Int
    }

    public struct Rebalance: Sendable {
        public var migrations: Int
        /// From adding the broker to every broker within 10% of the mean; nil: not within 30 s.
        public var balancedAfter: Duration?
    }

    public var subscribers: Int
    /// Events acknowledged.
    public var published: Int
    public var publishFailures: Int
    /// Notifications every subscriber should have had: acknowledged events × subscribers.
    public var expected: Int
    public var delivered = 0
    public var lost = 0
    public var outOfOrder = 0
    /// Every subscriber had every acknowledged event within 30 s of the end.
    public var settled: Bool
    public var duplicatesDropped: Int
    public var latency = LatencyDistribution([])
    public var perBrokerAtEnd: [String: Int]
    /// CPU while publishing, in percent of one core, by process.
    public var cpuPercent: [(name: String, percent: Double)]
    public var failover: Failover?
    /// How many clients followed each path of migrations ("broker-1→broker-3").
    public var migrationPaths: [String: Int] = [:]
    public var rebalance: Rebalance?

    public var description: String {
        var lines = [
            "",
            "published \(published) events (\(publishFailures) publish calls failed and were not acknowledged)",
            "delivered \(delivered) of \(expected) expected notifications; lost \(lost); out of order \(outOfOrder)"
                + (settled ? "" : " (not all arrived within 30 s of the end)"),
            "duplicates dropped by the client library: \(duplicatesDropped)",
            "publish→notify latency: \(latency)",
            "clients per broker at the end: " + Self.perBroker(perBrokerAtEnd),
            "CPU while publishing (100% = one core; the machine has \(ProcessInfo.processInfo.activeProcessorCount)): "
                + cpuPercent.map { String(format: "%@ %.0f%%", $0.name, $0.percent) }.joined(separator: ", "),
        ]
        if let failover {
            lines.append(
                "failover: \(failover.resumed.count) clients of \(failover.broker) reconnected to survivors; time from SIGKILL to resumed: "
                    + failover.resumed.description)
            if failover.notRecovered > 0 { lines.append("(\(failover.notRecovered) clients have not recovered)") }
        }
        if !migrationPaths.isEmpty {
            lines.append(
                "migrations by path: " + migrationPaths.sorted { $0.value > $1.value }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))
        }
        if let rebalance {
            if let balancedAfter = rebalance.balancedAfter {
                lines.append(
                    String(
                        format: "rebalance: %d clients migrated; balanced (every broker within 10%% of the mean) %.2f s after the broker was added",
                        rebalance.migrations, balancedAfter.inSeconds))
            } else {
                lines.append("rebalance: \(rebalance.migrations) clients migrated; NOT balanced within 30 s")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// "broker-1 96, broker-2 104".
    public static func perBroker(_ counts: [String: Int]) -> String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    /// Every broker within 10% of the mean (as the clients see it).
    public static func isBalanced(_ counts: [String: Int], brokers: Int) -> Bool {
        guard counts.count == brokers else { return false }
        let mean = Double(counts.values.reduce(0, +)) / Double(brokers)
        return counts.values.allSatisfy { abs(Double($0) - mean) <= mean * 0.10 }
    }
}
