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
                (try? await broker.broker.store.subscriptions(client: "library-user").count) == 1
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
