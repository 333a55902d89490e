import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

/// Streams recreated, channels redefined or deleted, and subscriptions shared by connections.
@Suite(.timeLimit(.minutes(1)))
struct LifecycleTests {
    static let smallStream: JSONValue = ["fields": [["name": "kind", "type": "string"], ["name": "n", "type": "int"]]]

    @Test func recreatingAStreamResetsPositionsAndDeliversTheNewEpoch() async throws {
        try await TestBroker.with { broker in
            _ = try await HTTPCall.call(.PUT, "\(broker.httpURL)/v1/streams/small", body: Self.smallStream)
            _ = try await HTTPCall.call(
                .PUT, "\(broker.httpURL)/v1/channels/SmallKind",
                body: ["stream": "small", "params": [["name": "kind", "type": "string"]], "where": "kind == $kind"])
            try await connect(broker, client: "r") { connection, inbox, _ in
                let sub = try await connection.subscribe(channel: "SmallKind", params: ["kind": "a"])
                _ = try await connection.publish(stream: "small", events: [["kind": "a", "n": 1]])
                #expect(try await inbox.notifications(1).map(\.seq) == [1])
                // Recreate with an extra field; the channel still type-checks.
                let recreated = try await HTTPCall.call(
                    .PUT, "\(broker.httpURL)/v1/streams/small?recreate=true",
                    body: ["fields": [["name": "kind", "type": "string"], ["name": "n", "type": "int"], ["name": "extra", "type": "bool", "optional": true]]])
                #expect(recreated["epoch"] != .string(sub.position.epoch))
                _ = try await connection.publish(stream: "small", events: [["kind": "a", "n": 2, "extra": true]])
                let reset = try await inbox.next()
                guard case .subscribed(nil, let info) = reset else {
                    Issue.record("expected a reset, got \(reset.encoded)")
                    return
                }
                #expect(info.recovered == false)
                #expect(info.position.seq == 0)
                #expect(info.params["kind"] == "a")
                let after = try await inbox.notifications(1)
                #expect(after.map(\.seq) == [1])
                #expect(after[0].2.event?["n"] == .int(2))
            }
            // A recreate that would break a channel is refused.
            let refused = try await HTTPCall.send(
                .PUT, "\(broker.httpURL)/v1/streams/small?recreate=true", rawBody: #"{"fields":[{"name":"other","type":"int"}]}"#)
            #expect(refused.status == 409)
        }
    }

    @Test func aChannelWithSubscriptionsCannotBeRedefinedButCanBeDeleted() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "c") { connection, inbox, _ in
                let sub = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                let same = try await HTTPCall.send(
                    .PUT, "\(broker.httpURL)/v1/channels/EmergenciesOfKind",
                    rawBody: #"{"stream":"emergencies","params":[{"name":"kind","type":"string"}],"where":"kind == $kind"}"#)
                #expect(same.status == 200)
                let changed = try await HTTPCall.send(
                    .PUT, "\(broker.httpURL)/v1/channels/EmergenciesOfKind",
                    rawBody: #"{"stream":"emergencies","params":[{"name":"kind","type":"string"}],"where":"kind != $kind"}"#)
                #expect(changed.status == 409)
                #expect(changed.body["error"]?["code"] == "conflict")
                let deleted = try await HTTPCall.send(.DELETE, "\(broker.httpURL)/v1/channels/EmergenciesOfKind")
                #expect(deleted.status == 204)
                let notice = try await inbox.next()
                #expect(notice == .unsubscribed(id: nil, subscription: sub.subscription))
            }
        }
    }

    @Test func unsubscribingFromAnotherConnectionStopsTheDeliveringOne() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "twin") { first, firstInbox, _ in
                let sub = try await first.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                try await connect(broker, client: "twin") { second, _, welcome in
                    #expect(welcome.subscriptions.map(\.subscription) == [sub.subscription])
                    // The second connection took the subscription over; unsubscribe from the first.
                    try await first.unsubscribe(sub.subscription)
                    _ = try await second.publish(stream: "emergencies", events: [emergency("fire", severity: 1)])
                }
                #expect(try await firstInbox.next() == .unsubscribed(id: nil, subscription: sub.subscription, reason: .takenOver))
                #expect(await firstInbox.isQuiet(for: .milliseconds(300)))
            }
        }
    }

    @Test func anonymousClientsLeaveNoSubscriptionsBehind() async throws {
        try await TestBroker.with { broker in
            let client = try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let welcome = try await connection.hello(client: nil)
                _ = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                return welcome.client
            }
            #expect(client.hasPrefix("anon-"))
            try await waitUntil("the anonymous subscription is removed") {
                (try? await broker.broker.store.subscriptions(client: client))?.isEmpty == true
            }
        }
    }
}
