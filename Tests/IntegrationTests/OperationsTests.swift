import Foundation
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinTesting

extension MultiProcess {
/// Live configuration and commands on a real network (`tocsin controller` and three `tocsin
/// broker` processes): a setting and a broadcast reach every broker, a command to a broker that
/// is down is carried out by the broker that comes back, drain and undrain move it in and out
/// of placement, and with two controllers on PostgreSQL all of it survives the leader's SIGKILL.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OperationsTests {
    static func network(brokers: Int, store: NetworkTests.SharedStore, controllers: Int = 1) async throws -> (LocalNetwork, PostgresDatabase?) {
        var configuration = LocalNetwork.Configuration(directory: TemporaryDirectory.make())
        let database = store == .postgres ? try await PostgresServer.database() : nil
        configuration.store = database?.url
        configuration.brokers = brokers
        configuration.controllers = controllers
        configuration.executable = ServerProcess.tocsinBinary
        configuration.brokerArguments = ["--no-fsync"]
        // Brokers heartbeat at the default 500 ms: what operators run.
        configuration.controllerArguments = ["--lease-ms", "3000"]
        do {
            return (try await LocalNetwork(configuration: configuration), database)
        } catch {
            database?.destroy()
            throw error
        }
    }

    /// The brokers in the registry, once all `count` have reported running `version`.
    static func brokersRunning(_ version: Int64, count: Int, _ client: ControllerClient) async throws -> [ComponentSummary] {
        try await waitForValue("\(count) brokers running configuration v\(version)", timeout: .seconds(20)) {
            guard let list = try? await client.components() else { return nil }
            let brokers = list.filter { $0.role == .broker }
            return brokers.count == count && brokers.allSatisfy({ $0.configVersion == version }) ? brokers : nil
        }
    }

    static func finished(_ id: String, _ client: ControllerClient, timeout: Duration = .seconds(30)) async throws -> CommandRecord {
        try await waitForValue("command \(id) finished", timeout: timeout) {
            guard let record = try? await client.command(id), record.isFinished else { return nil }
            return record
        }
    }

    @Test(arguments: NetworkTests.SharedStore.allCases) func settingsAndCommandsReachEveryBrokerAndOneThatRestarts(store: NetworkTests.SharedStore) async throws {
        let (network, database) = try await Self.network(brokers: 3, store: store)
        let client = ControllerClient(url: network.controllerURL)
        let supervisor = Mutex<Task<Void, Never>?>(nil)
        defer {
            supervisor.withLock { $0?.cancel() }
            Task { try? await client.shutdown() }
        }
        do {
            // Registered, each with its version and start time, running the empty configuration (v0).
            let initial = try await Self.brokersRunning(0, count: 3, client)
            #expect(initial.map(\.id) == ["broker-1", "broker-2", "broker-3"])
            #expect(initial.allSatisfy { $0.version == TocsinVersion.current && $0.startedAtMillis != nil && $0.urls["ws"] != nil })
            let controllers = try await client.components().filter { $0.role == .controller }
            #expect(controllers.count == 1 && controllers[0].state == "leader" && controllers[0].configVersion == 0)

            // A setting for every broker, and one for broker-3 alone: in force on all within a second.
            let set = ContinuousClock.now
            _ = try await client.setConfig("log.level", to: .string("debug"), in: .role(.broker))
            _ = try await client.setConfig("limits.maxConnectionsPerClient", to: .int(7), in: .role(.broker))
            _ = try await client.setConfig("limits.maxConnectionsPerClient", to: .int(3), in: .component("broker-3"))
            _ = try await Self.brokersRunning(3, count: 3, client)
            let reached = ContinuousClock.now - set
            print("operations: 3 configuration changes in force and reported by 3 brokers \(reached) after the first was set")
            // Refused at the edge, naming the flag: nothing stored.
            await #expect(throws: TocsinError.self) { try await client.setConfig("fetchCache.entries", to: .int(1), in: .role(.broker)) }
            await #expect(throws: TocsinError.self) { try await client.setConfig("log.level", to: .string("loud"), in: .role(.broker)) }
            let history = try await client.configHistory(limit: 10)
            #expect(history.map(\.version) == [3, 2, 1])
            #expect(history.allSatisfy { $0.by == "anonymous" })

            // A broadcast snapshot: every broker answers with what it runs.
            let given = ContinuousClock.now
            let snapshot = try await client.submitCommand(.snapshot, target: .role(.broker), timeoutSeconds: 20)
            let done = try await Self.finished(snapshot.id, client)
            print("operations: a broadcast snapshot answered by 3 brokers \(ContinuousClock.now - given) after it was given")
            #expect(done.targets.map(\.state) == [.succeeded, .succeeded, .succeeded])
            for t in done.targets {
                let result = try #require(t.result)
                #expect(result["id"]?.stringValue == t.component)
                #expect(result["configVersion"]?.intValue == 3)
                #expect(result["logLevel"]?.stringValue == "debug")
                #expect(result["limits"]?["maxConnectionsPerClient"]?.intValue == (t.component == "broker-3" ? 3 : 7))
            }
            let oldIncarnation = try #require(done.targets.first { $0.component == "broker-2" }?.result?["incarnation"]?.stringValue)

            // broker-2 dies; a command given while it is down is carried out when it is back.
            await network.kill("broker-2")
            let waiting = try await client.submitCommand(.snapshot, target: .component("broker-2"), timeoutSeconds: 60)
            #expect(waiting.targets.map(\.state) == [.pending])
            #expect(try await client.command(waiting.id).isFinished == false)
            supervisor.withLock { $0 = Task { await network.supervise() } }
            let after = try await Self.finished(waiting.id, client, timeout: .seconds(60))
            let result = try #require(after.targets.first?.result)
            #expect(after.targets.first?.state == .succeeded)
            #expect(result["incarnation"]?.stringValue != oldIncarnation)
            // The new incarnation runs the configuration too.
            #expect(result["configVersion"]?.intValue == 3)
            #expect(result["logLevel"]?.stringValue == "debug")

            // Drain broker-1: no longer in placement; undrain: back.
            let drain = try await Self.finished(try await client.submitCommand(.drain, target: .component("broker-1"), timeoutSeconds: 20).id, client)
            #expect(drain.targets.first?.state == .succeeded)
            try await waitUntil("broker-1 draining") {
                (try? await client.cluster().brokers.first { $0.id == "broker-1" }?.state) == .draining
            }
            let undrain = try await Self.finished(try await client.submitCommand(.undrain, target: .component("broker-1"), timeoutSeconds: 20).id, client)
            #expect(undrain.targets.first?.state == .succeeded)
            try await waitUntil("broker-1 active again") {
                (try? await client.cluster().brokers.first { $0.id == "broker-1" }?.state) == .active
            }

            // Unset: back to the startup values everywhere.
            _ = try await client.setConfig("log.level", to: nil, in: .role(.broker))
            _ = try await Self.brokersRunning(4, count: 3, client)
            let back = try await Self.finished(try await client.submitCommand(.snapshot, target: .role(.broker), timeoutSeconds: 20).id, client)
            #expect(back.targets.allSatisfy { $0.result?["logLevel"]?.stringValue == "warning" })
        } catch {
            await NetworkTests.tearDown(network, database)
            throw error
        }
        await NetworkTests.tearDown(network, database)
    }

    @Test func withTwoControllersTheConfigurationAndCommandsSurviveTheLeader() async throws {
        let (network, database) = try await Self.network(brokers: 2, store: .postgres, controllers: 2)
        let client = ControllerClient(urls: network.controllerURLs)
        defer { Task { try? await client.shutdown() } }
        do {
            _ = try await Self.brokersRunning(0, count: 2, client)
            _ = try await client.setConfig("log.level", to: .string("info"), in: .role(.broker))
            _ = try await client.setConfig("rebalance.enabled", to: .bool(false), in: .role(.controller))
            _ = try await Self.brokersRunning(2, count: 2, client)
            // Both controllers register; the follower applies controller settings from the store.
            let controllers = try await waitForValue("two controllers running v2") {
                let list = (try? await client.components())?.filter { $0.role == .controller } ?? []
                return list.count == 2 && list.allSatisfy({ $0.configVersion == 2 }) ? list : nil
            }
            #expect(Set(controllers.map(\.state)) == ["leader", "follower"])

            // A command to a broker that is down, then the leading controller dies.
            await network.kill("broker-2")
            let waiting = try await client.submitCommand(.snapshot, target: .component("broker-2"), timeoutSeconds: 90)
            let view = try await client.cluster()
            let leaderURL = try #require(view.leader)
            let leader = try #require(network.controllers.first { leaderURL.hasSuffix(":\($0.port)") })
            leader.signal(SIGKILL)
            _ = await leader.exit()
            // The other controller leads with the same configuration, history and command.
            try await waitUntil("the other controller leads", timeout: .seconds(20)) {
                guard let v = try? await client.cluster(), let l = v.leader else { return false }
                return l != leaderURL
            }
            #expect(try await client.configHistory(limit: 10).map(\.version) == [2, 1])
            #expect(try await client.command(waiting.id).targets.first?.state.isFinal == false)
            // broker-2 comes back and carries it out under the new leader.
            let supervisor = Task { await network.supervise() }
            defer { supervisor.cancel() }
            let done = try await Self.finished(waiting.id, client, timeout: .seconds(60))
            #expect(done.targets.first?.state == .succeeded)
            #expect(done.targets.first?.result?["logLevel"]?.stringValue == "info")
            _ = try await client.setConfig("log.level", to: .string("error"), in: .role(.broker))
            _ = try await Self.brokersRunning(3, count: 2, client)
        } catch {
            await NetworkTests.tearDown(network, database)
            throw error
        }
        await NetworkTests.tearDown(network, database)
    }
}
}
