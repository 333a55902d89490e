import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinLoad
import TocsinStore
import TocsinTesting

extension MultiProcess {
/// The whole network across hosts: three brokers, each in a network namespace of its own, two
/// controllers and one PostgreSQL in the root namespace (on the bridge), 300 durable subscribers
/// of the client library and a publisher throughout. The leading controller is SIGKILLed, then
/// one broker's link is cut and restored. Every acknowledged event must reach every subscriber
/// exactly once (after the library's dedupe), in seq order. Needs root (it fails, not skips,
/// without it).
@Suite(.serialized, .timeLimit(.minutes(5)))
struct MultiHostNetworkTests {
    static let logger: Logger = {
        var logger = Logger(label: "multi-host-network-test")
        logger.logLevel = .critical
        return logger
    }()

    static func cluster(_ url: String) async -> ClusterView? {
        guard let reply = try? await HTTPCall.call(.GET, url + "/v1/cluster", timeout: .seconds(2)) else { return nil }
        return try? ClusterView(json: reply)
    }

    @Test func aNetworkAcrossHostsLosesNothingWhenItsLeaderDiesAndALinkIsCut() async throws {
        try #require(getuid() == 0, "this test builds network namespaces and veth links (ip netns, ip link) and needs root; run it as root")
        let hosts = try NetworkNamespaces.create(count: 3)
        defer { hosts.destroy() }
        let database = try await PostgresServer.start(listenAddresses: ["127.0.0.1", hosts.bridgeAddress], trusting: [hosts.subnet])
        defer { database.destroy() }
        var configuration = LocalNetwork.Configuration(directory: TemporaryDirectory.make())
        defer { TemporaryDirectory.remove(configuration.directory) }
        configuration.executable = ServerProcess.tocsinBinary
        configuration.store = database.url(host: hosts.bridgeAddress)
        configuration.controllers = 2
        configuration.namespaces = hosts
        configuration.brokers = 3
        configuration.brokerArguments = ["--drain-timeout", "20"]
        configuration.controllerArguments = ["--lease-ms", "1500", "--heartbeat-ms", "200", "--cooldown-ms", "1000"]
        let network = try await LocalNetwork(configuration: configuration)
        let seeds = network.controllerURLs

        var audienceConfiguration = Audience.Configuration(count: 300, seeds: seeds, kind: "hosts-\(UInt32.random(in: 0...UInt32.max))")
        audienceConfiguration.initialBackoff = .milliseconds(500)
        // A broker cut off the network closes nothing: its clients notice by their pings.
        audienceConfiguration.pingInterval = .seconds(1)
        let audience = Audience(configuration: audienceConfiguration, logger: Self.logger)
        async let _ = audience.run()
        try await waitUntil("300 subscribers connected", timeout: .seconds(90)) { audience.allConnected }
        #expect(audience.perBroker.count == 3, "spread over the three hosts: \(audience.perBroker)")
        let feed = Feed(configuration: .init(seeds: seeds, kind: audience.kind, rate: 100), logger: Self.logger)
        async let publishing: Void = feed.run()
        try await waitUntil("100 events published") { feed.count >= 100 }

        // 1. The leading controller dies: the other leads within 5 s, and assigns.
        let leaderURL = try await waitForValue("a controller leads") { await Self.cluster(seeds[0])?.leader }
        let leaderIndex = try #require(seeds.firstIndex(of: leaderURL), "\(leaderURL) is one of \(seeds)")
        let followerURL = seeds[1 - leaderIndex]
        network.controllers[leaderIndex].kill(SIGKILL)
        let killedAt = ContinuousClock.now
        try await waitUntil("the follower leads", timeout: .seconds(10)) { await Self.cluster(followerURL)?.leader == followerURL }
        let takeover = ContinuousClock.now - killedAt
        #expect(takeover < .seconds(5), "the follower led \(takeover) after the leader's SIGKILL")
        print("multi-host: the follower led \(takeover) after the leader's SIGKILL")
        let assigned = try await HTTPCall.call(.GET, followerURL + "/v1/assign?client=after-takeover")
        #expect(assigned["broker"]?["id"]?.stringValue != nil, "the new leader assigns: \(assigned)")
        let afterTakeover = feed.count
        try await waitUntil("publishing goes on under the new leader") { feed.count >= afterTakeover + 50 }

        // 2. One broker's link is cut: its clients fail over, its lease runs out; back, it
        // rejoins as a new incarnation and the new leader rebalances clients onto it.
        let publisherBroker = feed.broker.withLock { $0 }
        let victim = try #require(network.members.first { $0.id != publisherBroker }, "a broker the publisher does not use")
        let host = try #require(victim.namespace)
        let before = try #require(await Self.cluster(followerURL)?.brokers.first { $0.id == victim.id })
        let clientsOfVictim = audience.perBroker[victim.id] ?? 0
        try hosts.cut(host)
        let cutAt = ContinuousClock.now
        try await waitUntil("the cut-off broker's clients moved to the others", timeout: .seconds(60)) { audience.perBroker[victim.id] == nil }
        print("multi-host: the \(clientsOfVictim) clients of the cut-off \(victim.id) were on other brokers \(ContinuousClock.now - cutAt) after the cut")
        try await waitUntil("the cut-off broker's lease ran out", timeout: .seconds(30)) {
            guard let view = await Self.cluster(followerURL) else { return false }
            return !view.brokers.contains { $0.id == victim.id }
        }
        let duringCut = feed.count
        try await waitUntil("publishing goes on while the link is cut") { feed.count >= duringCut + 50 }
        try hosts.restore(host)
        try await waitUntil("the broker rejoined as a new incarnation", timeout: .seconds(60)) {
            guard let back = await Self.cluster(followerURL)?.brokers.first(where: { $0.id == victim.id }) else { return false }
            return back.incarnation != before.incarnation
        }
        try await waitUntil("the new leader moved clients back onto it", timeout: .seconds(60)) { (audience.perBroker[victim.id] ?? 0) >= 50 }

        let afterRejoin = feed.count
        try await waitUntil("50 more events published") { feed.count >= afterRejoin + 50 }
        feed.stop()
        await publishing
        let expected = feed.acknowledgedSeqs
        try await waitUntil("every subscriber received every acknowledged event", timeout: .seconds(60)) { audience.received(all: expected) }
        #expect(audience.inOrder, "every subscriber saw strictly increasing seqs")
        print("multi-host: \(expected.count) acknowledged events, each received by all 300 subscribers in order")
        await network.stop(signal: SIGKILL)
    }
}
}
