import Testing
import TocsinClient
import TocsinCore
import TocsinStore
import TocsinTesting

/// A broker whose store reaches its size limit (`maxBytes`, SQLite's `max_page_count`:
/// the same `SQLITE_FULL` a full disk gives).
@Suite(.timeLimit(.minutes(1)))
struct StoreFullTests {
    func report(_ kind: String, padding: Int) -> JSONValue {
        guard case .object(var o) = emergency(kind, severity: 2) else { return emergency(kind, severity: 2) }
        o["description"] = .string(String(repeating: "d", count: padding))
        return .object(o)
    }

    @Test func aFullStoreRefusesPublishesWithStoreFullAndRecoversWhenRetentionFreesSpace() async throws {
        try await TestBroker.with(store: { .testing(in: $0, maxBytes: 512 << 10) }, {
            $0.retentionInterval = .seconds(3600)  // retention runs when the test says
        }) { broker in
            // Keep 10 events per stream once retention runs.
            var definition = try #require(try await HTTPCall.call(.GET, "\(broker.httpURL)/v1/streams/emergencies").objectValue)
            let fields = try #require(definition["fields"])
            definition = ["fields": fields, "retention": ["maxEvents": 10]]
            _ = try await HTTPCall.call(.PUT, "\(broker.httpURL)/v1/streams/emergencies", body: .object(definition))

            // A client that subscribed before the store filled, and is away while it does.
            try await connect(broker, client: "away") { away, _, _ in
                _ = try await away.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
            }

            try await connect(broker, client: "watcher") { watcher, watcherInbox, _ in
                _ = try await watcher.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                try await connect(broker, client: "reporter") { reporter, _, _ in
                    var stored: Int64 = 0
                    var refusal: TocsinError?
                    let batch = Array(repeating: report("fire", padding: 2000), count: 10)
                    for _ in 0..<200 {
                        do {
                            stored = try await reporter.publish(stream: "emergencies", events: batch).last!
                        } catch let error as TocsinError {
                            refusal = error
                            break
                        }
                    }
                    #expect(refusal?.code == .storeFull)
                    #expect(refusal?.message.contains("524288 bytes") == true)
                    #expect(stored >= 50, "the limit stopped it, not something else")

                    // Over HTTP: 507 with the same code.
                    let http = try await HTTPCall.send(
                        .POST, "\(broker.httpURL)/v1/streams/emergencies/events", rawBody: JSONValue.array(batch).serialized)
                    #expect(http.status == 507)
                    #expect(http.body["error"]?["code"] == .string("store_full"))

                    // Nothing of a refused batch was stored, and the reporter's connection still works.
                    let info = try await HTTPCall.call(.GET, "\(broker.httpURL)/v1/streams/emergencies")
                    #expect(info["lastSeq"] == .int(stored))
                    try await reporter.ping()
                    let delivered = try await watcherInbox.notifications(Int(stored)).map(\.seq)
                    #expect(delivered == Array(1...stored))

                    // Coming back needs no room: the away client resumes and gets everything it missed.
                    let missed = Int(stored)
                    let resumed = try await connect(broker, client: "away") { _, awayInbox, welcome in
                        (welcome.subscriptions.count, try await awayInbox.notifications(missed).map(\.seq))
                    }
                    #expect(resumed.0 == 1)
                    #expect(resumed.1 == Array(1...stored))

                    // Retention frees the pages; the next publish is stored right after the last one,
                    // and it is the watcher's next notification (nothing refused was delivered).
                    _ = try await broker.broker.store.enforceRetention(nowMillis: WallClock.nowMillis())
                    let next = try await reporter.publish(stream: "emergencies", events: batch)
                    #expect(next == Array(stored + 1...stored + 10))
                    #expect(try await watcherInbox.notifications(10).map(\.seq) == next)
                }
            }
        }
    }

    /// Over the HTTP API: a stream defined with `whenFull: dropOldest` takes every publish into a
    /// full store; one with a bad policy is refused.
    @Test func aStreamThatDropsItsOldestTakesEveryPublish() async throws {
        try await TestBroker.with(store: { .testing(in: $0, maxBytes: 512 << 10) }) { broker in
            let base = broker.httpURL + "/v1/streams/ticker"
            let fields: JSONValue = [["name": "text", "type": "string"]]
            let bad = try await HTTPCall.send(.PUT, base, rawBody: #"{"fields":[{"name":"text","type":"string"}],"retention":{"whenFull":"oldest"}}"#)
            #expect(bad.status == 422)
            #expect(bad.body["error"]?["code"] == .string("invalid_stream"))
            _ = try await HTTPCall.call(.PUT, base, body: ["fields": fields, "retention": ["whenFull": "dropOldest"]])
            #expect(try await HTTPCall.call(.GET, base)["retention"] == ["whenFull": "dropOldest"])
            let batch = JSONValue.array(Array(repeating: ["text": .string(String(repeating: "t", count: 2000))], count: 10))
            for _ in 0..<150 {
                _ = try await HTTPCall.call(.POST, base + "/events", body: batch)
            }
            let info = try await HTTPCall.call(.GET, base)
            #expect(info["lastSeq"] == .int(1500))
            #expect((info["firstSeq"]?.intValue ?? 0) > 500, "three times what the store holds went in; the oldest went out")
        }
    }
}
