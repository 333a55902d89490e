import AsyncHTTPClient
import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinTesting

extension MultiProcess {
/// Two real `tocsin controller --store postgres://…` processes on one throwaway PostgreSQL, and
/// brokers given both URLs: exactly one controller leads; SIGKILL it and the other leads within
/// 5 s while `assign` keeps answering; pause it (SIGSTOP) and, resumed, it no longer acts as
/// the leader.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ControllerFailoverTests {
    static let logger: Logger = {
        var logger = Logger(label: "controller-failover-test")
        logger.logLevel = .critical
        return logger
    }()

    /// The processes of one test, stopped (SIGKILL) and removed by `tearDown`.
    struct Network {
        let database: PostgresDatabase
        let directory: String
        var controllers: [ChildProcess]
        var brokers: [ChildProcess]

        var controllerURLs: [String] { controllers.map { "http://127.0.0.1:\($0.port)" } }
        var brokerURLs: [String] { brokers.map { "http://127.0.0.1:\($0.port)" } }

        func tearDown() async {
            for p in brokers + controllers {
                p.signal(SIGCONT)
                p.signal(SIGKILL)
                _ = await p.exit()
            }
            database.destroy()
            TemporaryDirectory.remove(directory)
        }
    }

    static func start(brokers count: Int) async throws -> Network {
        let database = try await PostgresServer.database()
        var network = Network(database: database, directory: TemporaryDirectory.make(), controllers: [], brokers: [])
        do {
            for _ in 0..<2 {
                network.controllers.append(
                    try await ChildProcess(
                        arguments: [
                            "controller", "--insecure-no-auth", "--port", "0", "--store", database.url, "--heartbeat-ms", "200", "--cooldown-ms", "1000",
                            "--log-level", "warning",
                        ]))
            }
            for i in 1...count {
                network.brokers.append(
                    try await ChildProcess(
                        arguments: [
                            "broker", "--insecure-no-auth", "--controller", network.controllerURLs.joined(separator: ","), "--broker-id", "broker-\(i)", "--port", "0",
                            "--data-dir", network.directory, "--no-fsync", "--drain-timeout", "1", "--log-level", "warning",
                        ]))
            }
        } catch {
            await network.tearDown()
            throw error
        }
        return network
    }

    static func cluster(_ base: String) async -> ClusterView? {
        guard let json = try? await HTTPCall.call(.GET, base + "/v1/cluster", timeout: .seconds(2)) else { return nil }
        return try? ClusterView(json: json)
    }

    /// The leader's URL once both controllers agree on it and on the brokers, and every broker
    /// has heard from it (its discovery list names that leader with its epoch).
    static func settledLeader(_ network: Network, among controllers: [String], brokers: Int, timeout: Duration = .seconds(30)) async throws
        -> (url: String, epoch: Int64)
    {
        try await waitForValue("one leader that every node agrees on", timeout: timeout) {
            var views: [ClusterView] = []
            for url in controllers {
                guard let view = await cluster(url) else { return nil }
                views.append(view)
            }
            guard let first = views.first, let leader = first.leader, let epoch = first.epoch,
                views.allSatisfy({ $0.leader == leader && $0.epoch == epoch && $0.brokers.count == brokers }),
                Set(views.map { $0.brokers.map(\.id) }).count == 1
            else { return nil }
            for url in network.brokerURLs {
                guard let view = await cluster(url), view.leader == leader, view.epoch == epoch else { return nil }
            }
            return (leader, epoch)
        }
    }

    static func heartbeat(_ base: String) async throws -> HTTPCall.Reply {
        try await HTTPCall.send(
            .POST, base + "/v1/brokers/broker-1/heartbeat", rawBody: #"{"incarnation":"whatever","load":{}}"#, timeout: .seconds(5))
    }

    static func assigns(_ base: String) async -> Bool {
        guard let json = try? await HTTPCall.call(.GET, base + "/v1/assign?client=c-\(UInt32.random(in: 0...UInt32.max))", timeout: .seconds(2))
        else { return false }
        return (try? AssignReply(json: json)) != nil
    }

    static func leaderGauge(_ base: String) async throws -> Double? {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/metrics"), timeout: .seconds(10))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        return text.split(separator: "\n").lazy.compactMap { line -> Double? in
            let parts = line.split(separator: " ")
            return parts.count == 2 && parts[0] == "tocsin_controller_leader" ? Double(parts[1]) : nil
        }.first
    }

    @Test func oneControllerLeadsAndAFollowerTakesOverWithinFiveSecondsOfItsDeath() async throws {
        let network = try await Self.start(brokers: 3)
        do {
            let urls = network.controllerURLs
            let (leader, epoch) = try await Self.settledLeader(network, among: urls, brokers: 3)
            let follower = try #require(urls.first { $0 != leader })
            #expect(epoch >= 1)

            // The follower refuses broker calls, naming the leader; it answers reads.
            let refused = try await Self.heartbeat(follower)
            #expect(refused.status == 421)
            #expect(refused.body["error"]?["code"]?.stringValue == "not_leader")
            #expect(refused.body["error"]?["leader"]?.stringValue == leader)
            #expect(await Self.assigns(follower))
            #expect(try await Self.leaderGauge(leader) == 1)
            #expect(try await Self.leaderGauge(follower) == 0)

            // A client that learned the network from the leader.
            // (It asks its seeds in random order: a new one until the leader answered first.)
            let locator = try await waitForValue("a client that asked the leader") { () async -> BrokerLocator? in
                let locator = BrokerLocator(configuration: .init(seeds: [leader, follower], client: "alice"), logger: Self.logger)
                return (try? await locator.refresh())?.controller == leader ? locator : nil
            }

            // SIGKILL the leader; `assign` on the follower keeps answering throughout.
            let victim = try #require(network.controllers.first { "http://127.0.0.1:\($0.port)" == leader })
            let killedAt = ContinuousClock.now
            victim.signal(SIGKILL)
            _ = await victim.exit()
            let unanswered = Atomic<Int>(0)
            let newEpoch = try await waitForValue("the follower to lead", timeout: .seconds(10)) { () async -> Int64? in
                if !(await Self.assigns(follower)) { unanswered.add(1, ordering: .relaxed) }
                guard let view = await Self.cluster(follower), view.leader == follower, let e = view.epoch else { return nil }
                return e
            }
            let takeover = ContinuousClock.now - killedAt
            // The client's next `locate` finds the controller that is left and asks it.
            let located = try await locator.locate()
            #expect(located.id.hasPrefix("broker-"))
            #expect(await locator.view?.controller == follower)
            #expect(takeover < .seconds(5), "the follower led \(takeover) after the leader's death")
            #expect(newEpoch > epoch)
            #expect(unanswered.load(ordering: .relaxed) == 0, "assign went unanswered during the takeover")

            // The brokers re-attach to the new leader (their heartbeats are accepted: they hold its epoch).
            let settled = try await Self.settledLeader(network, among: [follower], brokers: 3)
            #expect(settled.url == follower)
            #expect(settled.epoch == newEpoch)
            let reattached = ContinuousClock.now - killedAt
            #expect(reattached < .seconds(15), "brokers re-attached \(reattached) after the leader's death")
            #expect(try await Self.leaderGauge(follower) == 1)
            #expect(await Self.assigns(follower))
        } catch {
            await network.tearDown()
            throw error
        }
        await network.tearDown()
    }

    @Test func aPausedLeaderIsDeposedAndWhenItResumesItIssuesNothing() async throws {
        let network = try await Self.start(brokers: 2)
        do {
            let urls = network.controllerURLs
            let (leader, epoch) = try await Self.settledLeader(network, among: urls, brokers: 2)
            let other = try #require(urls.first { $0 != leader })
            let paused = try #require(network.controllers.first { "http://127.0.0.1:\($0.port)" == leader })

            // A partition, as far as the lease goes: the leader stops renewing (and answering).
            paused.signal(SIGSTOP)
            let newEpoch = try await waitForValue("the other controller to lead", timeout: .seconds(10)) { () async -> Int64? in
                guard let view = await Self.cluster(other), view.leader == other, let e = view.epoch, e > epoch else { return nil }
                return e
            }
            // The brokers follow the new leader (they have seen its epoch).
            _ = try await waitForValue("the brokers to re-attach to the new leader", timeout: .seconds(20)) { () async -> Bool? in
                for url in network.brokerURLs {
                    guard let view = await Self.cluster(url), view.leader == other, view.epoch == newEpoch else { return nil }
                }
                return true
            }

            // Resumed, the old leader's own deadline has long passed: before it even claims
            // again, it refuses to act as the leader.
            paused.signal(SIGCONT)
            let refused = try await Self.heartbeat(leader)
            #expect(refused.status == 421, "the deposed leader answered \(refused.status): \(refused.body)")
            #expect(refused.body["error"]?["code"]?.stringValue == "not_leader")
            // And once it has claimed again it names the new leader and epoch, and follows.
            let view = try await waitForValue("the old leader to follow") { () async -> ClusterView? in
                guard let view = await Self.cluster(leader), view.leader == other else { return nil }
                return view
            }
            #expect(view.epoch == newEpoch)
            #expect(try await Self.leaderGauge(leader) == 0)
            #expect(try await Self.leaderGauge(other) == 1)
            // The brokers still follow the new leader's epoch.
            for url in network.brokerURLs {
                #expect(await Self.cluster(url)?.epoch == newEpoch)
            }
        } catch {
            await network.tearDown()
            throw error
        }
        await network.tearDown()
    }
}
}
