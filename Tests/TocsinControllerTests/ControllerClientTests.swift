import Testing
import TocsinClient
import TocsinHTTPClient
import TocsinController
import TocsinCore
import TocsinTesting

/// The typed client of the controller's API against a real controller: every call, values that
/// need escaping in the path and query, and refusals thrown as the controller's error.
@Suite(.timeLimit(.minutes(1)))
struct ControllerClientTests {
    /// An incarnation and a client id that break a URL unless escaped.
    static let incarnation = "i 1/x&y=z?"

    @Test func everyCallReachesTheControllerWithItsValuesIntact() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            // A trailing slash on the base URL is harmless.
            try await ControllerClient.withClient(url: c.url + "/") { client in
                let request = RegistrationRequest(
                    id: "b1", incarnation: Self.incarnation, webSocketURL: "ws://127.0.0.1:9001/v1/ws", httpURL: "http://127.0.0.1:9001",
                    region: "eu", capacity: 10)
                let lease = try await client.register(request)
                #expect(lease.cluster?.brokers.map(\.incarnation) == [Self.incarnation])
                #expect(lease.heartbeatMillis == 500)
                let beat = try await client.heartbeat(id: "b1", incarnation: Self.incarnation, load: BrokerLoad(connections: 3))
                #expect(beat.viewVersion != nil)
                // The discovery list has the load at once (a lease's copy of it may be up to 5 s old).
                #expect(try await client.cluster().brokers.first?.load.connections == 3)

                let asked = AssignmentRequest(clientID: "a b&c=d/e?", region: "eu", location: GeoPoint(lat: 52, lon: 4), exclude: ["b9", "b 8"])
                #expect(try await client.assign(asked).broker.id == "b1")
                #expect(c.controller.assignmentCount == 1)

                _ = try await client.drain(id: "b1", incarnation: Self.incarnation)
                #expect(try await client.cluster().brokers.map(\.state) == [.draining])
                do {
                    _ = try await client.heartbeat(id: "b1", incarnation: "another", load: .zero)
                    Issue.record("a heartbeat of another incarnation was accepted")
                } catch let error as TocsinError {
                    #expect(error.code == .staleIncarnation)
                }
                try await client.deregister(id: "b1", incarnation: Self.incarnation)
                #expect(try await client.cluster().brokers.isEmpty)
            }
        }
    }

    @Test func aClientGivenAnHTTPClientLeavesItOpen() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            let shared = ControllerClient(url: c.url, httpClient: HTTPCall.shared)
            try await shared.shutdown()
            #expect(try await shared.cluster().brokers.isEmpty)
            #expect(try await shared.at(c.url).cluster().controller == c.url)
        }
    }

    @Test func withSeveralControllersACallMovesOnFromOneThatCannotBeReachedAndKeepsTheOneThatAnswered() async throws {
        try await TestController.with(clock: ManualClock()) { c in
            // Nothing listens on port 1.
            let client = ControllerClient(urls: ["http://127.0.0.1:1", c.url], httpClient: HTTPCall.shared)
            #expect(client.url == "http://127.0.0.1:1")
            let view = try await client.cluster(timeout: .seconds(5))
            #expect(view.controller == c.url)
            #expect(view.leader == c.url)
            #expect(view.epoch == 0)
            #expect(client.url == c.url)
        }
    }

    @Test func afterNotLeaderTheNamedLeaderIsTriedFirstThenTheOthersInOrder() {
        let urls = ["http://a", "http://b", "http://c"]
        #expect(ControllerClient.next(after: ["http://a"], named: "http://c", urls: urls) == "http://c")
        #expect(ControllerClient.next(after: ["http://a", "http://c"], named: "http://c", urls: urls) == "http://b")
        // A leader outside the list is followed too.
        #expect(ControllerClient.next(after: ["http://a"], named: "http://d", urls: urls) == "http://d")
        #expect(ControllerClient.next(after: urls, named: nil, urls: urls) == nil)
    }
}
