import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

@Suite(.timeLimit(.minutes(1)))
struct DeliveryTests {
    @Test func continuousPushDeliversOnlyMatchingEventsInOrder() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "alice") { connection, inbox, welcome in
                #expect(welcome.client == "alice")
                #expect(welcome.subscriptions.isEmpty)
                let sub = try await connection.subscribe(
                    channel: "EmergenciesNearMe", params: ["lat": 52.37, "lon": 4.89, "radiusKm": 25, "minSeverity": 3])
                #expect(sub.recovered)
                #expect(sub.params["minSeverity"] == .int(3))
                let seqs = try await connection.publish(
                    stream: "emergencies",
                    events: [
                        emergency("fire", severity: 4),  // matches
                        emergency("fire", severity: 2),  // too mild
                        emergency("flood", severity: 5, lat: 48.85, lon: 2.35, area: "Paris"),  // too far
                        emergency("gas", severity: 3, lat: 52.30, lon: 4.80),  // matches
                    ])
                #expect(seqs == [1, 2, 3, 4])
                let got = try await inbox.notifications(2)
                #expect(got.map(\.seq) == [1, 4])
                #expect(got.allSatisfy { $0.subscription == sub.subscription })
                #expect(got[0].2.event?["kind"] == "fire")
                #expect(got[1].2.event?["kind"] == "gas")
                #expect(await inbox.isQuiet(for: .milliseconds(200)))
            }
        }
    }

    /// One commit of 1,000 events is dispatched in chunks (`StreamDispatcher.eventsPerLock`),
    /// letting a subscribe in between: every event still arrives once and in order, to a
    /// subscriber that was there and to one that joins while the batches flow.
    @Test func aBatchLargerThanOneDispatchChunkArrivesWholeAndInOrder() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "early") { early, earlyInbox, _ in
                _ = try await early.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                let batch = (1...1000).map { emergency(["fire", "flood"][$0 % 2], severity: Int64($0 % 5 + 1)) }
                try await connect(broker, client: "late") { late, lateInbox, _ in
                    async let joined = late.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"], from: .earliest)
                    for _ in 0..<3 { _ = try await early.publish(stream: "emergencies", events: batch) }
                    _ = try await joined
                    let fires = (0..<3000).filter { $0 % 2 == 1 }.map { Int64($0 + 1) }
                    #expect(try await earlyInbox.notifications(fires.count).map(\.seq) == fires)
                    #expect(try await lateInbox.notifications(fires.count).map(\.seq) == fires)
                    #expect(await earlyInbox.isQuiet(for: .milliseconds(100)))
                    #expect(await lateInbox.isQuiet(for: .milliseconds(100)))
                }
            }
        }
    }

    @Test func identicalSubscriptionsOfDifferentClientsEachGetTheEvent() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "a") { a, inboxA, _ in
                try await connect(broker, client: "b") { b, inboxB, _ in
                    let sa = try await a.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                    let sb = try await b.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                    #expect(sa.subscription != sb.subscription)
                    _ = try await a.publish(stream: "emergencies", events: [emergency("fire", severity: 1), emergency("flood", severity: 1)])
                    #expect(try await inboxA.notifications(1).map(\.seq) == [1])
                    #expect(try await inboxB.notifications(1).map(\.seq) == [1])
                }
            }
        }
    }

    @Test func notifyDeliverySendsCountsAndResultsAreFetched() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "n") { connection, inbox, _ in
                let sub = try await connection.subscribe(
                    channel: "RecentNearMeCount", params: ["lat": 52.37, "lon": 4.89, "radiusKm": 10])
                _ = try await connection.publish(
                    stream: "emergencies", events: [emergency("fire", severity: 1), emergency("fire", severity: 1, lat: 10, lon: 10), emergency("gas", severity: 2)])
                let got = try await inbox.notifications(2)
                #expect(got.map(\.seq) == [1, 3])
                #expect(got.allSatisfy { $0.2 == .count(1) })
                let fetched = try await connection.fetch(subscription: sub.subscription, after: 0)
                #expect(fetched.events.map(\.seq) == [1, 3])
                let page = try await connection.fetch(subscription: sub.subscription, after: 0, limit: 1)
                #expect(page.events.map(\.seq) == [1])
                #expect(page.seq == 1)
            }
        }
    }

    @Test func repetitiveChannelBatchesMatchesPerPeriod() async throws {
        try await TestBroker.with { broker in
            let channel: JSONValue = [
                "stream": "emergencies", "params": .array([["name": "area", "type": "string"]]),
                "where": "area == $area", "mode": "repetitive", "period": "300ms",
            ]
            _ = try await HTTPCall.call(.PUT, "\(broker.httpURL)/v1/channels/Digest", body: channel)
            try await connect(broker, client: "r") { connection, inbox, _ in
                _ = try await connection.subscribe(channel: "Digest", params: ["area": "Delft"])
                _ = try await connection.publish(
                    stream: "emergencies",
                    events: [emergency("a", severity: 1, area: "Delft"), emergency("b", severity: 1), emergency("c", severity: 1, area: "Delft")])
                let got = try await inbox.notifications(1)
                guard case .events(let events) = got[0].2 else {
                    Issue.record("expected events, got \(got[0].2)")
                    return
                }
                #expect(events.map(\.seq) == [1, 3])
                #expect(got[0].seq == 3)
            }
        }
    }

    @Test func resumesMissedEventsAfterReconnectFromAckedPosition() async throws {
        try await TestBroker.with { broker in
            let subscription = try await connect(broker, client: "resumer") { connection, inbox, _ in
                let sub = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                _ = try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 1)])
                let got = try await inbox.notifications(1)
                try await connection.ack(subscription: sub.subscription, seq: got[0].seq)
                return sub.subscription
            }
            // While the client is away: three events, two of which match.
            try await connect(broker, client: "publisher") { connection, _, _ in
                _ = try await connection.publish(
                    stream: "emergencies", events: [emergency("fire", severity: 2), emergency("flood", severity: 2), emergency("fire", severity: 3)])
            }
            try await connect(broker, client: "resumer") { connection, inbox, welcome in
                #expect(welcome.subscriptions.map(\.subscription) == [subscription])
                #expect(welcome.subscriptions.first?.position.seq == 1)
                let got = try await inbox.notifications(2)
                #expect(got.map(\.seq) == [2, 4])
                // Live delivery continues after the replay, with no gap.
                _ = try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 4)])
                #expect(try await inbox.notifications(1).map(\.seq) == [5])
            }
        }
    }

    @Test func startFromEarliestAndFromAStalePosition() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "x") { connection, inbox, _ in
                _ = try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 1), emergency("fire", severity: 1)])
                let early = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"], from: .earliest)
                #expect(early.position.seq == 0)
                #expect(try await inbox.notifications(2).map(\.seq) == [1, 2])
                let stale = try await connection.subscribe(
                    channel: "EmergenciesOfKind", params: ["kind": "flood"], from: .position(StreamPosition(epoch: "gone", seq: 7)))
                #expect(stale.recovered == false)
                #expect(stale.position.seq == 0)
            }
        }
    }

    @Test func unsubscribeStopsDelivery() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "u") { connection, inbox, _ in
                let sub = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                try await connection.unsubscribe(sub.subscription)
                _ = try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 1)])
                #expect(await inbox.isQuiet(for: .milliseconds(300)))
            }
            try await connect(broker, client: "u") { _, _, welcome in
                #expect(welcome.subscriptions.isEmpty)
            }
        }
    }
}
