import ArgumentParser
import Foundation
import Logging
import Synchronization
import TocsinClient
import TocsinCore
import TocsinDev

/// `tocsin bench network`: a local network of real processes (a controller and N brokers), S
/// subscribers of the client library spread over it by `assign`, a publisher at a fixed rate, and
/// optionally a broker killed with SIGKILL or a broker added mid-run. Prints delivered/expected,
/// lost, out of order, duplicates the library dropped, latency, per-broker client counts, and the
/// failover recovery time or the rebalance (clients moved, time to balance).
struct NetworkBench {
    let subscribers: Int
    let brokers: Int
    let rate: Int
    let duration: Double
    let killAt: Double?
    let addAt: Double?
    let noFsync: Bool
    let logger: Logger

    /// What one subscriber saw.
    final class Probe: Sendable {
        struct State {
            var seqs: [Int64] = []
            var outOfOrder = 0
            var latencies: [Int64] = []
            var broker = ""
            var connectedOnce = false
            /// Monotonic nanos of the first disconnect after the kill, and of the reconnect after it.
            var lostAt: Int64?
            var recoveredAt: Int64?
            /// Each migration followed, "from→to".
            var moves: [String] = []
        }

        let state = Mutex(State())
    }

    final class Run: Sendable {
        let killedAt = Atomic<Int64>(0)
        let killed = Mutex<String?>(nil)
        let acknowledged = Mutex<[Int64]>([])
        let publishFailures = Atomic<Int>(0)
        /// From adding a broker to the first moment every broker is within 10% of the mean.
        let balancedAfter = Mutex<Duration?>(nil)
    }

    func run() async throws {
        let directory = NSTemporaryDirectory() + "tocsin-bench-net-\(UUID().uuidString)"
        var configuration = LocalNetwork.Configuration(directory: directory)
        configuration.executable = ChildProcess.currentExecutable
        configuration.brokers = brokers
        if noFsync { configuration.brokerArguments.append("--no-fsync") }
        let network = try await LocalNetwork(configuration: configuration)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        print("network: controller \(network.controllerURL), \(network.members.map { "\($0.id) :\($0.port)" }.joined(separator: ", "))")
        do {
            try await measure(network)
        } catch {
            await network.stop(signal: SIGKILL)
            throw error
        }
        await network.stop(signal: SIGKILL)
    }

    private func measure(_ network: LocalNetwork) async throws {
        let kind = "net-\(UInt32.random(in: 0...UInt32.max))"
        let seeds = [network.controllerURL]
        let probes = (0..<subscribers).map { _ in Probe() }
        let run = Run()
        var libraries: [Subscriber] = []
        var tasks: [Task<Void, Never>] = []
        for i in 0..<subscribers {
            var configuration = Subscriber.Configuration(seeds: seeds, client: "\(kind)-\(i)")
            // Thousands of clients share this process and its two cores with the brokers: ack
            // once a second (acks are cumulative) rather than after every notification.
            configuration.ackInterval = .seconds(1)
            let subscriber = Subscriber(
                configuration: configuration,
                requests: [SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": .string(kind)])], logger: logger)
            libraries.append(subscriber)
            let probe = probes[i]
            tasks.append(
                Task {
                    for await event in subscriber.events() {
                        Self.observe(event, probe: probe, run: run)
                    }
                })
        }
        defer { for t in tasks { t.cancel() } }
        let connectStart = ContinuousClock.now
        try await Self.waitFor("\(subscribers) subscribers to connect", timeout: .seconds(120)) {
            probes.allSatisfy { $0.state.withLock { $0.connectedOnce } }
        }
        print(String(format: "%d subscribers connected in %.1f s", subscribers, (ContinuousClock.now - connectStart).seconds))
        print("clients per broker: " + Self.perBroker(probes))

        // Publish at the rate for the duration; acknowledged seqs are what every subscriber must get.
        let publisher = Publisher(seeds: seeds, client: "\(kind)-publisher", logger: logger)
        let cpuBefore = Self.cpu(network)
        let start = ContinuousClock.now
        var killDone = killAt == nil
        var addDone = addAt == nil
        var monitor: Task<Void, Never>?
        defer { monitor?.cancel() }
        let total = Int(duration * Double(rate))
        print("publishing \(rate) events/s for \(duration) s" + (killAt.map { "; SIGKILL a broker at \($0) s" } ?? "")
            + (addAt.map { "; add a broker at \($0) s" } ?? ""))
        for n in 0..<total {
            let due = start + .seconds(Double(n) / Double(rate))
            if due > ContinuousClock.now { try await Task.sleep(until: due) }
            let elapsed = (ContinuousClock.now - start).seconds
            if !killDone, let killAt, elapsed >= killAt {
                killDone = true
                // The broker with the most of our clients.
                let counts = Self.counts(probes)
                if let victim = counts.max(by: { $0.value < $1.value })?.key {
                    run.killed.withLock { $0 = victim }
                    run.killedAt.store(Self.monotonicNanos(), ordering: .relaxed)
                    await network.crash(victim)
                    print(String(format: "t=%.1f s: SIGKILL %@ (%d clients)", elapsed, victim, counts[victim] ?? 0))
                }
            }
            if !addDone, let addAt, elapsed >= addAt {
                addDone = true
                let added = ContinuousClock.now
                let member = try await network.addBroker()
                let brokerCount = network.members.count
                // The first moment every broker is within 10% of the mean, as the clients see it.
                monitor = Task {
                    while !Task.isCancelled {
                        if Self.isBalanced(Self.counts(probes), brokers: brokerCount) {
                            run.balancedAfter.withLock { $0 = ContinuousClock.now - added }
                            return
                        }
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                }
                print(String(format: "t=%.1f s: added %@ on port %d", elapsed, member.id, member.port))
            }
            let event: JSONValue = .object([
                "kind": .string(kind), "severity": .int(3), "location": .object(["lat": .double(52.0), "lon": .double(4.0)]),
                "area": .string("bench"), "description": .string("t\(Self.monotonicNanos())"), "time": .int(1_763_900_000_000),
            ])
            do {
                let published = try await publisher.publish(stream: "emergencies", events: [event])
                run.acknowledged.withLock { $0 += published.seqs }
            } catch {
                run.publishFailures.add(1, ordering: .relaxed)
            }
        }
        let publishingWall = (ContinuousClock.now - start).seconds
        let cpuAfter = Self.cpu(network)
        let acknowledged = run.acknowledged.withLock { $0 }
        let expected = Set(acknowledged)
        // Wait (bounded) for every subscriber to have every acknowledged event.
        let settled = await Self.waitUntilTrue(timeout: .seconds(30)) {
            probes.allSatisfy { p in p.state.withLock { Set($0.seqs).isSuperset(of: expected) } }
        }
        if addAt != nil {
            _ = await Self.waitUntilTrue(timeout: .seconds(30)) { run.balancedAfter.withLock { $0 } != nil }
        }

        // Report.
        var delivered = 0
        var lost = 0
        var outOfOrder = 0
        var latencies: [Int64] = []
        var recoveries: [Int64] = []
        for p in probes {
            p.state.withLock { s in
                let got = Set(s.seqs)
                delivered += got.intersection(expected).count
                lost += expected.subtracting(got).count
                outOfOrder += s.outOfOrder
                latencies += s.latencies
                if let lostAt = s.lostAt, let back = s.recoveredAt { recoveries.append(back - lostAt) }
            }
        }
        let duplicates = libraries.reduce(0) { $0 + $1.statistics.duplicatesDropped }
        let migrations = libraries.reduce(0) { $0 + $1.statistics.migrationsFollowed }
        latencies.sort()
        print("")
        print("published \(acknowledged.count) events (\(run.publishFailures.load(ordering: .relaxed)) publish calls failed and were not acknowledged)")
        print("delivered \(delivered) of \(expected.count * subscribers) expected notifications; lost \(lost); out of order \(outOfOrder)"
            + (settled ? "" : " (not all arrived within 30 s of the end)"))
        print("duplicates dropped by the client library: \(duplicates)")
        print("publish→notify latency: " + Bench.percentiles(latencies))
        print("clients per broker at the end: " + Self.perBroker(probes))
        let usage = cpuAfter.keys.sorted().map { name in
            String(format: "%@ %.0f%%", name, (cpuAfter[name, default: 0] - cpuBefore[name, default: 0]) / publishingWall * 100)
        }
        print("CPU while publishing (100% = one core; the machine has \(ProcessInfo.processInfo.activeProcessorCount)): " + usage.joined(separator: ", "))
        if let killed = run.killed.withLock({ $0 }) {
            let killedAt = run.killedAt.load(ordering: .relaxed)
            var sinceKill: [Int64] = []
            for p in probes {
                p.state.withLock { s in
                    if let back = s.recoveredAt, s.lostAt != nil { sinceKill.append(back - killedAt) }
                }
            }
            sinceKill.sort()
            print("failover: \(sinceKill.count) clients of \(killed) reconnected to survivors; time from SIGKILL to resumed: "
                + Bench.percentiles(sinceKill))
            if sinceKill.count < recoveries.count { print("(\(recoveries.count - sinceKill.count) clients have not recovered)") }
        }
        var paths: [String: Int] = [:]
        for p in probes {
            let moves = p.state.withLock { $0.moves }
            if !moves.isEmpty { paths[moves.joined(separator: ", "), default: 0] += 1 }
        }
        if !paths.isEmpty {
            print("migrations by path: " + paths.sorted { $0.value > $1.value }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))
        }
        if let balancedAfter = run.balancedAfter.withLock({ $0 }) {
            print(String(format: "rebalance: %d clients migrated; balanced (every broker within 10%% of the mean) %.2f s after the broker was added",
                migrations, balancedAfter.seconds))
        } else if addAt != nil {
            print("rebalance: \(migrations) clients migrated; NOT balanced within 30 s")
        }
    }

    /// CPU seconds so far of this process (the clients), the controller and each live broker.
    static func cpu(_ network: LocalNetwork) -> [String: Double] {
        var usage = ["bench clients": Bench.cpuSeconds(getpid()), "controller": Bench.cpuSeconds(network.controller.pid)]
        for m in network.members { usage[m.id] = Bench.cpuSeconds(m.pid) }
        return usage
    }

    static func observe(_ event: Subscriber.Event, probe: Probe, run: Run) {
        switch event {
        case .notification(let n):
            let now = monotonicNanos()
            probe.state.withLock { s in
                for e in n.events {
                    if let last = s.seqs.last, e.seq <= last { s.outOfOrder += 1 }
                    s.seqs.append(e.seq)
                    if let sent = Bench.sentNanos(e.json) { s.latencies.append(now - sent) }
                }
            }
        case .connected(let broker, _):
            probe.state.withLock { s in
                if s.lostAt != nil, s.recoveredAt == nil { s.recoveredAt = monotonicNanos() }
                s.broker = broker
                s.connectedOnce = true
            }
        case .migrated(let from, let to, _):
            probe.state.withLock { s in
                s.broker = to
                s.moves.append("\(from)→\(to)")
            }
        case .disconnected:
            let killedAt = run.killedAt.load(ordering: .relaxed)
            probe.state.withLock { s in
                if killedAt > 0, s.lostAt == nil, s.broker == run.killed.withLock({ $0 }) { s.lostAt = monotonicNanos() }
            }
        case .notRecovered, .failed:
            break
        }
    }

    static func counts(_ probes: [Probe]) -> [String: Int] {
        var counts: [String: Int] = [:]
        for p in probes { counts[p.state.withLock { $0.broker }, default: 0] += 1 }
        return counts
    }

    static func perBroker(_ probes: [Probe]) -> String {
        counts(probes).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    /// Every broker within 10% of the mean (as the clients see it).
    static func isBalanced(_ counts: [String: Int], brokers: Int) -> Bool {
        guard counts.count == brokers else { return false }
        let mean = Double(counts.values.reduce(0, +)) / Double(brokers)
        return counts.values.allSatisfy { abs(Double($0) - mean) <= mean * 0.10 }
    }

    static func waitFor(_ what: String, timeout: Duration, _ condition: @escaping @Sendable () -> Bool) async throws {
        guard await waitUntilTrue(timeout: timeout, condition) else {
            throw ValidationError("timed out waiting for \(what)")
        }
    }

    static func waitUntilTrue(timeout: Duration, _ condition: @escaping @Sendable () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    static func monotonicNanos() -> Int64 { Bench.monotonicNanos() }
}
