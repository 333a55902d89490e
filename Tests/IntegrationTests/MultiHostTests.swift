import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinStore
import TocsinTesting

extension MultiProcess {
/// Brokers on different hosts, as far as the network goes: each `tocsin serve` in a network
/// namespace of its own (`NetworkNamespaces`), one PostgreSQL in the root namespace listening on
/// the bridge. Needs root: run as another user, it fails and says so (it does not skip).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MultiHostTests {
    /// Two hosts on one PostgreSQL: an event published on A reaches a subscriber of B (through
    /// the database: B's LISTEN/NOTIFY wake-up), and B's `GET …/events` reads it. Cutting A's
    /// link makes A unreachable from the root namespace (B still answers); restoring it brings A
    /// back, publishing again. `destroy` leaves no namespace, veth or bridge of the run behind.
    @Test func brokersOnTwoHostsShareOneDatabaseAndACutLinkIsolatesOne() async throws {
        try #require(
            getuid() == 0,
            "this test builds network namespaces, veth pairs and a bridge (ip netns, ip link) and needs root; run it as root")
        let network = try NetworkNamespaces.create(count: 2)
        let database = try await PostgresServer.start(listenAddresses: ["127.0.0.1", network.bridgeAddress], trusting: [network.subnet])
        defer { database.destroy() }
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let (hostA, hostB) = (network.hosts[0], network.hosts[1])
        var brokers: [String] = []
        // One after the other: the first creates the schema and the example stream and channels.
        for (i, host) in [hostA, hostB].enumerated() {
            let process = try await network.start(
                on: host, executable: ServerProcess.tocsinBinary,
                arguments: [
                    "serve", "--insecure-no-auth", "--host", host.address, "--port", "0", "--data-dir", "\(directory)/\(i)", "--broker-id", "broker-\(i + 1)",
                    "--store", database.url(host: network.bridgeAddress), "--log-level", "warning",
                ])
            brokers.append("http://\(host.address):\(process.port)")
        }
        let (brokerA, brokerB) = (brokers[0], brokers[1])

        // A subscriber of B sees what a publisher of A publishes.
        var logger = Logger(label: "multi-host-test")
        logger.logLevel = .critical
        let kind = "multihost-\(UInt32.random(in: 0...UInt32.max))"
        let received = Mutex<[String]>([])
        let connected = Atomic<Bool>(false)
        let subscriber = Subscriber(
            configuration: .init(url: brokerB.replacingOccurrences(of: "http://", with: "ws://") + "/v1/ws", client: kind),
            requests: [SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": .string(kind)])], logger: logger)
        let subscription = Task {
            for await event in subscriber.events() {
                switch event {
                case .connected: connected.store(true, ordering: .relaxed)
                case .notification(let n):
                    let descriptions = n.events.map { (try? JSONValue.parse($0.json))?["description"]?.stringValue ?? "?" }
                    received.withLock { $0 += descriptions }
                default: break
                }
            }
        }
        defer { subscription.cancel() }
        try await waitUntil("the subscriber of B connected") { connected.load(ordering: .relaxed) }
        let reply = try await HTTPCall.call(.POST, "\(brokerA)/v1/streams/emergencies/events", body: CrashRecoveryTests.event(1, kind: kind))
        let seq = try #require(reply["seq"]?.intValue)
        try await waitUntil("B's subscriber got the event published on A") { received.withLock { $0 } == ["n1"] }
        let page = try await HTTPCall.call(.GET, "\(brokerB)/v1/streams/emergencies/events?after=\(seq - 1)&limit=1")
        #expect(page["events"]?.arrayValue?.first?["event"]?["kind"]?.stringValue == kind, "B reads A's event: \(page)")

        // A cut link: A does not answer from here; B does.
        try network.cut(hostA)
        await #expect(throws: (any Error).self, "A answered with its link cut") {
            _ = try await HTTPCall.call(.GET, "\(brokerA)/v1/streams/emergencies", timeout: .seconds(2))
        }
        _ = try await HTTPCall.call(.GET, "\(brokerB)/v1/streams/emergencies", timeout: .seconds(5))
        try network.restore(hostA)
        // Back: A publishes again (its database connections come back too), and B's subscriber gets it.
        try await waitUntil("A publishes again after its link is restored", timeout: .seconds(60)) {
            (try? await HTTPCall.call(
                .POST, "\(brokerA)/v1/streams/emergencies/events", body: CrashRecoveryTests.event(2, kind: kind), timeout: .seconds(2))) != nil
        }
        try await waitUntil("B's subscriber got A's event after the restore") { received.withLock { $0 }.contains("n2") }

        network.destroy()
        #expect(try network.remaining() == [], "left behind by \(network.prefix)")
    }
}
}
