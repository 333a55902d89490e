import NIOCore
import NIOPosix
import Synchronization
import Testing
import TocsinBroker
@testable import TocsinClient
import TocsinController
import TocsinCore
import TocsinTesting

/// The client library against a standalone broker: it is a network of one (discovery lists it,
/// `assign` answers with it), so the same app code works with `serve` and with a network.
/// Two minutes: these tests run in the full suite's busiest first minute, where one of them has
/// taken 37 s on a loaded host; a publish that waited for the 10-minute search (below) still fails.
@Suite(.timeLimit(.minutes(2)))
struct ClientLibraryTests {
    @Test func aStandaloneBrokerIsANetworkOfOne() async throws {
        try await TestBroker.with { broker in
            let view = try ClusterView(json: try await HTTPCall.call(.GET, broker.httpURL + "/v1/cluster"))
            #expect(view.controller == nil)
            #expect(view.brokers.map(\.webSocketURL) == [broker.webSocketURL])
            let assigned = try AssignReply(json: try await HTTPCall.call(.GET, broker.httpURL + "/v1/assign?client=x"))
            #expect(assigned.broker.webSocketURL == broker.webSocketURL)
            #expect(assigned.alternates.isEmpty)
        }
    }

    @Test func aNotificationTheAppDidNotFinishComesAgainAfterARestart() async throws {
        try await TestBroker.with { broker in
            var configuration = Subscriber.Configuration(seeds: [broker.httpURL], client: "crashy-app")
            configuration.ackInterval = .milliseconds(10)
            let request = SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": "fire"])
            // First run: take the first notification, finish it (ask for the next), take the second, then "die".
            let firstRun = Task { () -> [Int64] in
                var seqs: [Int64] = []
                for await event in Subscriber(configuration: configuration, requests: [request], logger: testLogger).events() {
                    if case .notification(let n) = event { seqs.append(n.seq) }
                    if seqs.count == 2 { return seqs }
                }
                return seqs
            }
            try await waitUntil("the subscription is open") {
                (try? await broker.broker.store.subscriptions(client: "crashy-app").count) == 1
            }
            let published = try await Publisher(seeds: [broker.httpURL]).publish(stream: "emergencies", events: [
                emergency("fire", severity: 1), emergency("fire", severity: 2),
            ]).seqs
            #expect(await firstRun.value == published)
            // The first was acknowledged (the app asked for more after it); the second never was.
            try await waitUntil("the first notification's ack is stored") {
                (try? await broker.broker.store.subscriptions(client: "crashy-app").first?.ackedSeq) == published[0]
            }
            var secondRun: [Int64] = []
            for await event in Subscriber(configuration: configuration, requests: [request], logger: testLogger).events() {
                if case .notification(let n) = event {
                    secondRun.append(n.seq)
                    break
                }
            }
            #expect(secondRun == [published[1]], "the unfinished notification is delivered again, the finished one is not")
        }
    }

    /// Each `assign` counts as a client arriving at the broker (until its next heartbeat), so a
    /// publisher that asked per publish would skew where subscribers are sent, and load the
    /// controller in step with the publish rate.
    @Test func aPublisherAsksTheNetworkOnceNotPerPublish() async throws {
        try await TestController.with { c in
            try await TestBroker.with({ $0.cluster = ClusterSettings(controllerURL: c.url) }) { broker in
                try await waitUntil("the broker is active") { c.controller.cluster.brokers.first?.state == .active }
                let publisher = Publisher(seeds: [c.url])
                var seqs: [Int64] = []
                for severity: Int64 in 1...10 {
                    seqs += try await publisher.publish(stream: "emergencies", events: [emergency("fire", severity: severity)]).seqs
                }
                #expect(seqs == Array(1...10))
                #expect(c.controller.assignmentCount == 1)
                // TocsinClient keeps one publisher for all its publishes, and its copies share it.
                let tocsin = TocsinClient(seeds: [c.url], client: "app", logger: testLogger)
                let copy = tocsin
                _ = try await tocsin.publish("emergencies", events: [emergency("flood", severity: 2)])
                _ = try await copy.publish("emergencies", events: [emergency("flood", severity: 3)])
                #expect(c.controller.assignmentCount == 2)
                // A publish the broker refuses as invalid is the caller's error, not the broker's:
                // the publisher keeps it. (Losing it, the publisher asks again: NetworkTests.)
                await #expect(throws: TocsinError.self) {
                    try await publisher.publish(stream: "emergencies", events: [["kind": "fire"]])
                }
                _ = try await publisher.publish(stream: "emergencies", events: [emergency("gas", severity: 1)])
                #expect(c.controller.assignmentCount == 2)
                // Publishes made at once by a publisher that has no broker yet share one assign.
                let cold = Publisher(seeds: [c.url])
                let coldSeqs = try await withThrowingTaskGroup(of: [Int64].self) { group in
                    for severity: Int64 in 1...10 {
                        group.addTask { try await cold.publish(stream: "emergencies", events: [emergency("storm", severity: severity)]).seqs }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
                #expect(coldSeqs.sorted() == Array(14...23))
                #expect(c.controller.assignmentCount == 3)
                #expect(try await broker.broker.store.stream(named: "emergencies")?.lastSeq == 23)
            }
        }
    }

    /// Concurrent publishes share one search for a broker; a caller cancelled meanwhile stops
    /// waiting for it at once (here the "network" accepts connections and never answers). The
    /// search's requests time out only after 10 minutes, so a publish that waited for the search
    /// would not return within the suite's time limit (2 minutes), however loaded the machine.
    @Test func aCancelledPublishStopsWaitingForTheSharedSearch() async throws {
        final class Accepted: Sendable { let channels = Mutex<[any Channel]>([]) }
        let accepted = Accepted()
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                accepted.channels.withLock { $0.append(channel) }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(silent.localAddress?.port)
        var locating = BrokerLocator.Configuration(seeds: ["http://127.0.0.1:\(port)"], client: "publisher")
        locating.requestTimeout = .seconds(600)
        let publisher = Publisher(locating: locating, attemptTimeout: .seconds(600), logger: testLogger)
        let waiting = Task { try await publisher.publish(stream: "emergencies", events: [emergency("fire", severity: 1)]) }
        try await waitUntil("the search reached the network") { !accepted.channels.withLock { $0.isEmpty } }
        waiting.cancel()
        let result = await waiting.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(accepted.channels.withLock { $0.allSatisfy(\.isActive) }, "the search is still waiting for its answer")
        // Ends the search too: its connection closes.
        for channel in accepted.channels.withLock({ $0 }) { try? await channel.close() }
        try await silent.close()
    }

    @Test func aSubscriptionThatCanNeverWorkEndsItsSequence() async throws {
        try await TestBroker.with { broker in
            let tocsin = TocsinClient(seeds: [broker.httpURL], client: "typo", logger: testLogger)
            var count = 0
            for await _ in tocsin.subscribe("NoSuchChannel") { count += 1 }
            #expect(count == 0)
        }
    }

    @Test func twoSubscriptionsOfOneClientBothDeliver() async throws {
        try await TestBroker.with { broker in
            let tocsin = TocsinClient(seeds: [broker.httpURL], client: "two-channels", logger: testLogger)
            /// The `kind` of the first two events a subscription to that kind delivers.
            @Sendable func firstTwoKinds(_ kind: String) async -> [String] {
                var kinds: [String] = []
                for await n in tocsin.subscribe("EmergenciesOfKind", params: ["kind": .string(kind)]) {
                    kinds += n.events.compactMap { (try? JSONValue.parse($0.json))?["kind"]?.stringValue }
                    if kinds.count == 2 { break }
                }
                return kinds
            }
            let fires = Task { await firstTwoKinds("fire") }
            let floods = Task { await firstTwoKinds("flood") }
            try await waitUntil("both subscriptions are open") {
                var open = 0
                for kind in ["fire", "flood"] {
                    let id = TocsinClient.clientID("two-channels", channel: "EmergenciesOfKind", params: ["kind": .string(kind)])
                    open += (try? await broker.broker.store.subscriptions(client: id).count) ?? 0
                }
                return open == 2
            }
            for kind in ["fire", "flood", "flood", "fire"] {
                _ = try await tocsin.publish("emergencies", events: [emergency(kind, severity: 2)])
            }
            #expect(await fires.value == ["fire", "fire"])
            #expect(await floods.value == ["flood", "flood"])
        }
    }

    @Test func subscribeIsAnAsyncSequenceOfNotificationsInOrder() async throws {
        try await TestBroker.with { broker in
            let tocsin = TocsinClient(seeds: [broker.httpURL], client: "library-user", logger: testLogger)
            let received = Task {
                var seqs: [Int64] = []
                for await n in tocsin.subscribe("EmergenciesOfKind", params: ["kind": "fire"]) {
                    seqs.append(n.seq)
                    if seqs.count == 3 { break }
                }
                return seqs
            }
            // The subscription exists once the broker lists it for the client.
            try await waitUntil("the subscription is open") {
                let id = TocsinClient.clientID("library-user", channel: "EmergenciesOfKind", params: ["kind": "fire"])
                return (try? await broker.broker.store.subscriptions(client: id).count) == 1
            }
            var published: [Int64] = []
            for kind in ["fire", "flood", "fire", "fire"] {
                published += try await tocsin.publish("emergencies", events: [emergency(kind, severity: 2)])
            }
            let seqs = await received.value
            #expect(seqs == [published[0], published[2], published[3]])
        }
    }
}
