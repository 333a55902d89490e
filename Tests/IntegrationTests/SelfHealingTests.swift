import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinLoad
import TocsinTesting

extension MultiProcess {
/// Self-healing on real processes: `tocsin chaos run` against `tocsin dev --enable-chaos` kills
/// a broker every few seconds under a durable load and reports nothing lost and every broker
/// back; the autoscaler adds brokers as clients arrive past capacity and drains them away as
/// they leave, with every event delivered and no subscriber seeing an error.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct SelfHealingTests {
    static let logger: Logger = {
        var logger = Logger(label: "self-healing-test")
        logger.logLevel = .critical
        return logger
    }()

    @Test func aChaosRunAgainstDevLosesNothingAndEveryBrokerComesBack() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        // `tocsin dev` with authentication (its key made in the data directory) and the chaos API.
        let dev = try await ChildProcess(
            executable: ServerProcess.tocsinBinary,
            arguments: ["dev", "--port", "0", "--brokers", "3", "--enable-chaos", "--data-dir", directory + "/data", "--log-level", "warning", "--no-fsync"],
            timeout: .seconds(60))
        let chaosURL = "http://127.0.0.1:\(dev.port)"
        do {
            let arguments = [
                "chaos", "run", "--url", chaosURL, "--auth-keys", directory + "/data/auth-keys.json", "--every", "3", "--duration", "24",
                "--subscribers", "60", "--rate", "20", "--settle", "60",
            ]
            let report = try await Task.detached { try ChildProcess.output(of: ServerProcess.tocsinBinary, arguments) }.value
            print(report)
            #expect(report.contains("acknowledged events lost: 0 (subscribers missing any: 0); out of order: 0; not recovered: 0"))
            #expect(report.contains("every killed process restarted: yes"))
            #expect(report.contains("all caught up within 60 s of the last kill: yes"))
            let kills = report.split(separator: "\n").filter { $0.contains(" killed broker-") }
            #expect(kills.count >= 7)
        } catch {
            await Self.stop(dev)
            throw error
        }
        // SIGTERM (as Ctrl-C): dev stops its processes and exits.
        #expect(await Self.stop(dev), "tocsin dev did not exit within 30 s of SIGTERM")
    }

    /// SIGTERM, and SIGKILL if it has not exited within 30 s; whether it exited by itself.
    @discardableResult
    static func stop(_ dev: ChildProcess) async -> Bool {
        dev.signal(SIGTERM)
        let exited = await firstOrNil(within: .seconds(30)) { await dev.exit() } != nil
        if !exited {
            dev.signal(SIGKILL)
            _ = await dev.exit()
        }
        return exited
    }

    @Test func autoscalingAddsBrokersPastCapacityAndDrainsThemAwayWithNothingLost() async throws {
        var configuration = LocalNetwork.Configuration(directory: TemporaryDirectory.make())
        configuration.brokers = 1
        configuration.executable = ServerProcess.tocsinBinary
        configuration.brokerArguments = ["--no-fsync", "--capacity", "20", "--drain-timeout", "20"]
        configuration.controllerArguments = ["--cooldown-ms", "1000"]
        let network = try await LocalNetwork(configuration: configuration)
        let client = ControllerClient(url: network.controllerURL)
        var policy = Autoscaler.Policy()
        policy.minimum = 1
        policy.maximum = 3
        policy.scaleOutAbove = 0.8
        policy.scaleInBelow = 0.6
        policy.sustain = .seconds(1)
        policy.cooldown = .seconds(2)
        let decisions = Mutex<[String]>([])
        let scaler = Task {
            await network.autoscale(
                policy: policy, interval: .milliseconds(500), observe: { try? await client.cluster(timeout: .seconds(2)).brokers },
                report: { line in decisions.withLock { $0.append(line) } })
        }
        let seeds = [network.controllerURL]
        let kind = "scale-\(UInt32.random(in: 0...UInt32.max))"
        var stayingConfiguration = Audience.Configuration(count: 10, seeds: seeds, kind: kind)
        stayingConfiguration.clientPrefix = kind + "-staying"
        var leavingConfiguration = Audience.Configuration(count: 40, seeds: seeds, kind: kind)
        leavingConfiguration.clientPrefix = kind + "-leaving"
        let staying = Audience(configuration: stayingConfiguration, logger: Self.logger)
        let leaving = Audience(configuration: leavingConfiguration, logger: Self.logger)
        let feed = Feed(configuration: .init(seeds: seeds, kind: kind, rate: 20), logger: Self.logger)
        let stayingTask = Task { await staying.run() }
        let leavingTask = Task { await leaving.run() }
        // New subscriptions start at the latest event: publish once the ones that stay are in.
        try await waitUntil("the staying subscribers connected", timeout: .seconds(60)) { staying.allConnected }
        let publishing = Task { await feed.run() }
        defer {
            scaler.cancel()
            stayingTask.cancel()
            leavingTask.cancel()
            publishing.cancel()
            Task { try? await client.shutdown() }
        }
        do {
            // 50 clients on one broker of capacity 20: brokers are added up to the maximum.
            try await waitUntil("three brokers holding the clients", timeout: .seconds(90)) {
                guard let view = try? await client.cluster() else { return false }
                return view.brokers.filter { $0.state == .active }.count == 3 && view.brokers.reduce(0) { $0 + $1.load.connections } >= 50
            }
            // 40 leave: utilization falls, and brokers are drained and stopped down to one. (Before
            // this, clients refused for want of capacity retried: those count as disconnects.)
            let noticedBefore = staying.probes.map { ($0.snapshot.disconnects, $0.snapshot.failures) }
            leavingTask.cancel()
            try await waitUntil("one broker left", timeout: .seconds(120)) {
                guard let view = try? await client.cluster() else { return false }
                return network.members.count == 1 && view.brokers.count == 1
            }
            feed.stop()
            await publishing.value
            let acknowledged = Set(feed.acknowledged.withLock { $0 })
            // 20 events/s over the scale-out and scale-in (a busy machine publishes fewer): enough to check.
            #expect(acknowledged.count > 40)
            let all = try await poll(timeout: .seconds(30)) { staying.received(all: acknowledged) }
            if !all {
                for (i, p) in staying.probes.enumerated() {
                    let s = p.snapshot
                    let missing = acknowledged.subtracting(s.seqs).sorted()
                    if !missing.isEmpty {
                        print("staying-\(i) on \(s.broker): missing \(missing.count) (\(missing.prefix(5))…\(missing.suffix(3))), seen \(s.seqs.count), last \(s.seqs.last ?? -1), moves \(s.moves), connections \(s.connections)")
                    }
                }
                print("acknowledged \(acknowledged.count): \(acknowledged.min() ?? -1)…\(acknowledged.max() ?? -1)")
            }
            #expect(all, "every staying subscriber has every acknowledged event")
            #expect(staying.inOrder)
            // Scale-in moved them by migration (make-before-break), not by failover.
            #expect(staying.migrationReasons.contains("drain"))
            #expect(staying.probes.allSatisfy { $0.snapshot.notRecovered == 0 })
            // No client noticed the scale-in: no connection lost, nothing refused (they moved by `migrate`).
            let noticed = zip(staying.probes.map(\.snapshot), noticedBefore).filter { now, before in
                now.disconnects > before.0 || now.failures > before.1
            }
            #expect(noticed.isEmpty, "staying subscribers that saw a disconnect or an error while brokers were drained: \(noticed.map { ($0.0.disconnects, $0.0.failures, $0.0.moves) })")
            let log = decisions.withLock { $0 }
            print("autoscaler: " + log.joined(separator: "; "))
            #expect(log.filter { $0.contains("adding a broker") }.count == 2)
            #expect(log.filter { $0.contains("draining and stopping") }.count == 2)
        } catch {
            await NetworkTests.tearDown(network, nil)
            throw error
        }
        await NetworkTests.tearDown(network, nil)
    }
}
}
