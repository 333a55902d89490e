import Testing
import TocsinClient
@testable import TocsinBroker
@testable import TocsinStore
import TocsinCore
import TocsinTesting

/// Publish keys (`PublishKey`): a publish repeated with its key is answered with the first
/// one's seqs and stored once, over the socket and over HTTP.
@Suite(.timeLimit(.minutes(1)))
struct PublishKeyTests {
    @Test func aRepeatedKeyIsAnsweredWithTheFirstSeqsAndDeliveredOnce() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "keyed") { connection, inbox, _ in
                let sub = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                let event = emergency("fire", severity: 3).serialized
                // Sent back to back: both in flight at once (whether they share a commit or not).
                for id in ["a", "b"] {
                    try await connection.send(text: #"{"type":"publish","id":"\#(id)","stream":"emergencies","key":"alarm-1","event":\#(event)}"#)
                }
                var replies: [ServerMessage] = []
                var notifications: [Int64] = []
                while replies.count < 2 {
                    switch try await inbox.next() {
                    case .notify(_, let seq, _): notifications.append(seq)
                    case let reply: replies.append(reply)
                    }
                }
                guard case .published("a", _, _, [1], false) = replies[0], case .published("b", _, _, [1], true) = replies[1] else {
                    throw TestFailure("expected the first stored and the second a duplicate, got \(replies.map(\.encoded))")
                }
                // Later, and through the client library: still a duplicate.
                #expect(try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 3)], key: "alarm-1") == [1])
                #expect(try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 3)], key: "alarm-2") == [2])
                while notifications.count < 2 { notifications += try await inbox.notifications(1).map(\.seq) }
                #expect(notifications == [1, 2], "one notification per stored event")
                #expect(await inbox.isQuiet(for: .milliseconds(200)))
                let fetched = try await connection.fetch(subscription: sub.subscription, after: 0)
                #expect(fetched.events.map(\.seq) == [1, 2])
            }
        }
    }

    /// A publish commits after its connection is gone, so its reply is lost; the publisher sends
    /// it again with its key on a new connection and learns its seq, and it is stored once.
    @Test func aPublishWhoseReplyWasLostIsStoredOnceWhenSentAgain() async throws {
        try await TestBroker.with { broker in
            let store = try #require(broker.broker.store as? SQLiteStore)
            let writer = try await HeldWriter(store)
            let event = emergency("fire", severity: 5).serialized
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                try await connection.send(text: #"{"type":"publish","id":"lost","stream":"emergencies","key":"alarm-9","event":\#(event)}"#)
                try await waitUntil("the publish is queued for commit") { broker.broker.publishBudget.used > 0 }
            }  // closed before the commit: the reply has nowhere to go
            writer.release()
            try await writer.released()
            try await waitUntil("it committed") { broker.broker.publishBudget.used == 0 }
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                try await connection.send(text: #"{"type":"publish","id":"again","stream":"emergencies","key":"alarm-9","event":\#(event)}"#)
                guard case .published("again", _, _, [1], true) = try await inbox.next() else { throw TestFailure("expected a duplicate of seq 1") }
            }
            let events = try await HTTPCall.call(.GET, "\(broker.httpURL)/v1/streams/emergencies/events?after=0")
            #expect(events["events"]?.arrayValue?.count == 1)
        }
    }

    @Test func httpTakesTheKeyFromIdempotencyKey() async throws {
        try await TestBroker.with { broker in
            let url = "\(broker.httpURL)/v1/streams/emergencies/events"
            let body = JSONValue.array([emergency("flood", severity: 2), emergency("gas", severity: 4)]).serialized
            let first = try await HTTPCall.send(.POST, url, rawBody: body, headers: [("Idempotency-Key", "batch-7")])
            #expect(first.status == 201)
            #expect(first.body["seqs"] == [1, 2])
            #expect(first.body["duplicate"] == nil)
            let again = try await HTTPCall.send(.POST, url, rawBody: body, headers: [("Idempotency-Key", "batch-7")])
            #expect(again.status == 200)
            #expect(again.body["seqs"] == [1, 2])
            #expect(again.body["duplicate"] == true)
            let events = try await HTTPCall.call(.GET, url + "?after=0")
            #expect(events["events"]?.arrayValue?.count == 2)

            let published = try await Publisher(seeds: [broker.httpURL]).publish(stream: "emergencies", events: [emergency("fire", severity: 1)], key: "batch-7")
            #expect(published.duplicate && published.seqs == [1, 2], "the key names the publish, whatever it carries")
            let fresh = try await Publisher(seeds: [broker.httpURL]).publish(stream: "emergencies", events: [emergency("fire", severity: 1)])
            #expect(!fresh.duplicate && fresh.seqs == [3], "the library keys every publish itself")
        }
    }

    @Test func badKeysAreRejectedAndStoreNothing() async throws {
        try await TestBroker.with { broker in
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                let event = emergency("fire", severity: 3).serialized
                let tooLong = String(repeating: "k", count: PublishKey.maxBytes + 1)
                for (i, key) in [#""""#, "42", "[\"k\"]", "\"\(tooLong)\"", #""a\u0000b""#].enumerated() {
                    try await connection.send(text: #"{"type":"publish","id":"p\#(i)","stream":"emergencies","key":\#(key),"event":\#(event)}"#)
                    guard case .error(let id, "bad_request", let message, _) = try await inbox.next() else {
                        throw TestFailure("key \(key): expected bad_request")
                    }
                    #expect(id == "p\(i)")
                    #expect(message.contains("key"))
                }
            }
            let url = "\(broker.httpURL)/v1/streams/emergencies/events"
            let reply = try await HTTPCall.send(
                .POST, url, rawBody: emergency("fire", severity: 3).serialized,
                headers: [("Idempotency-Key", String(repeating: "k", count: PublishKey.maxBytes + 1))])
            #expect(reply.status == 400)
            #expect(reply.body["error"]?["code"] == "bad_request")
            let empty = try await HTTPCall.send(.POST, url, rawBody: emergency("fire", severity: 3).serialized, headers: [("Idempotency-Key", "")])
            #expect(empty.status == 400)
            #expect(empty.body["error"]?["code"] == "bad_request")
            let two = try await HTTPCall.send(
                .POST, url, rawBody: emergency("fire", severity: 3).serialized, headers: [("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
            #expect(two.status == 400)
            #expect(two.body["error"]?["message"]?.stringValue?.contains("one Idempotency-Key") == true)
            let events = try await HTTPCall.call(.GET, url + "?after=0")
            #expect(events["events"]?.arrayValue?.isEmpty == true, "nothing was stored")
        }
    }
}
