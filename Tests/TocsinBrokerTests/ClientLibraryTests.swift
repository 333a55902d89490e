import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

/// The client library against a standalone broker: it is a network of one (discovery lists it,
/// `assign` answers with it), so the same app code works with `serve` and with a network.
@Suite(.timeLimit(.minutes(1)))
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
            let fires = Task { () -> [String] in
                var kinds: [String] = []
                for await n in tocsin.subscribe("EmergenciesOfKind", params: ["kind": "fire"]) {
                    kinds += n.events.compactMap { (try? JSONValue.parse($0.json))?["kind"]?.stringValue }
                    if kinds.count == 2 { break }
                }
                return kinds
            }
            let floods = Task { () -> [String] in
                var kinds: [String] = []
                for await n in tocsin.subscribe("EmergenciesOfKind", params: ["kind": "flood"]) {
                    kinds += n.events.compactMap { (try? JSONValue.parse($0.json))?["kind"]?.stringValue }
                    if kinds.count == 2 { break }
                }
                return kinds
            }
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
