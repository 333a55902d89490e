import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

@Suite(.timeLimit(.minutes(1)))
struct BadInputTests {
    /// Sends a raw frame and returns the error it provokes.
    func errorFor(_ text: String, on connection: Connection, inbox: Inbox) async throws -> (id: String?, code: String, message: String) {
        try await connection.send(text: text)
        let reply = try await inbox.next()
        guard case .error(let id, let code, let message, _) = reply else {
            throw TestFailure("expected error, got \(reply.encoded)")
        }
        return (id, code, message)
    }

    @Test func malformedFramesGetErrorsAndTheConnectionStaysUsable() async throws {
        try await TestBroker.with({ $0.maxMessageBytes = 2048 }) { broker in
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                #expect(try await errorFor("{not json", on: connection, inbox: inbox).code == "bad_json")
                #expect(try await errorFor("[1,2]", on: connection, inbox: inbox).code == "bad_request")
                #expect(try await errorFor(#"{"id":"7"}"#, on: connection, inbox: inbox).code == "bad_request")
                let unknown = try await errorFor(#"{"type":"teleport","id":"9"}"#, on: connection, inbox: inbox)
                #expect(unknown.code == "unknown_message")
                #expect(unknown.id == "9")
                let early = try await errorFor(#"{"type":"subscribe","id":"1","channel":"EmergenciesOfKind","params":{"kind":"fire"}}"#, on: connection, inbox: inbox)
                #expect(early.code == "not_identified")
                let big = String(repeating: "x", count: 3000)
                let tooLarge = try await errorFor(#"{"type":"ping","pad":"\#(big)"}"#, on: connection, inbox: inbox)
                #expect(tooLarge.code == "too_large")
                // Still open and working.
                try await connection.ping()
                _ = try await connection.hello(client: "after-errors")
                let sub = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                #expect(!sub.subscription.isEmpty)
            }
        }
    }

    @Test func badSubscriptionsAreRejectedWithTheReason() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "bad-subs") { connection, inbox, _ in
                await #expect(throws: TocsinError(.unknownChannel, "no channel named 'Nope'")) {
                    _ = try await connection.subscribe(channel: "Nope", params: [:])
                }
                let missing = await #expect(throws: TocsinError.self) {
                    _ = try await connection.subscribe(channel: "EmergenciesNearMe", params: ["lat": 1, "lon": 2])
                }
                #expect(missing?.code == .invalidParams)
                #expect(missing?.message.contains("radiusKm") == true)
                let wrongType = await #expect(throws: TocsinError.self) {
                    _ = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": 42])
                }
                #expect(wrongType?.code == .invalidParams)
                let extra = await #expect(throws: TocsinError.self) {
                    _ = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire", "colour": "red"])
                }
                #expect(extra?.code == .invalidParams)
                let ack = try await errorFor(#"{"type":"ack","subscription":"s_nope","seq":3}"#, on: connection, inbox: inbox)
                #expect(ack.code == "unknown_subscription")
                let badFrom = try await errorFor(
                    #"{"type":"subscribe","channel":"EmergenciesOfKind","params":{"kind":"x"},"from":"yesterday"}"#, on: connection, inbox: inbox)
                #expect(badFrom.code == "bad_request")
            }
        }
    }

    @Test func anInvalidEventRejectsTheWholeBatch() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "pub") { connection, _, _ in
                var bad = emergency("fire", severity: 1)
                if case .object(var o) = bad {
                    o["severity"] = "high"
                    bad = .object(o)
                }
                let error = await #expect(throws: TocsinError.self) {
                    _ = try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 1), bad])
                }
                #expect(error?.code == .schemaViolation)
                #expect(error?.message.contains("events[1]") == true)
                let unknownField = await #expect(throws: TocsinError.self) {
                    _ = try await connection.publish(stream: "emergencies", events: [["kind": "x", "bogus": 1]])
                }
                #expect(unknownField?.code == .schemaViolation)
                await #expect(throws: TocsinError(.unknownStream, "no stream named 'nope'")) {
                    _ = try await connection.publish(stream: "nope", events: [["a": 1]])
                }
            }
            let stream = try await HTTPCall.call(.GET, "\(broker.httpURL)/v1/streams/emergencies")
            #expect(stream["lastSeq"] == .int(0))
        }
    }

    @Test func httpErrorsHaveStableCodesAndStatuses() async throws {
        try await TestBroker.with({ $0.maxBodyBytes = 4096 }) { broker in
            let base = broker.httpURL
            func expectError(_ method: HTTPCall.Method, _ path: String, _ body: String?, status: Int, code: String) async throws {
                let reply = try await HTTPCall.send(method, base + path, rawBody: body)
                #expect(reply.status == status, "\(method) \(path)")
                #expect(reply.body["error"]?["code"]?.stringValue == code, "\(method) \(path): \(reply.body.serialized)")
                #expect(reply.body["error"]?["message"]?.stringValue?.isEmpty == false)
            }
            try await expectError(.POST, "/v1/streams/emergencies/events", "{oops", status: 400, code: "bad_json")
            try await expectError(.POST, "/v1/streams/emergencies/events", "", status: 400, code: "bad_json")
            try await expectError(.POST, "/v1/streams/emergencies/events", "[" + String(repeating: "1,", count: 3000) + "1]", status: 413, code: "too_large")
            try await expectError(.POST, "/v1/streams/missing/events", #"{"a":1}"#, status: 404, code: "unknown_stream")
            try await expectError(.POST, "/v1/streams/emergencies/events", #"{"kind":"fire"}"#, status: 422, code: "schema_violation")
            try await expectError(.PUT, "/v1/streams/s1", #"{"fields":[{"name":"a","type":"float"}]}"#, status: 422, code: "invalid_stream")
            try await expectError(.PUT, "/v1/streams/bad%20name", #"{"fields":[{"name":"a","type":"int"}]}"#, status: 422, code: "invalid_stream")
            try await expectError(.PUT, "/v1/streams/emergencies", #"{"fields":[{"name":"a","type":"int"}]}"#, status: 409, code: "conflict")
            try await expectError(
                .PUT, "/v1/channels/c1", #"{"stream":"emergencies","where":"severity >= "}"#, status: 422, code: "invalid_channel")
            try await expectError(
                .PUT, "/v1/channels/c2", #"{"stream":"emergencies","where":"severity == \"high\""}"#, status: 422, code: "invalid_channel")
            try await expectError(.PUT, "/v1/channels/c3", #"{"stream":"nowhere","where":"true"}"#, status: 404, code: "unknown_stream")
            try await expectError(.GET, "/v1/channels/none", nil, status: 404, code: "unknown_channel")
            try await expectError(.GET, "/v1/streams/emergencies/events?after=-1", nil, status: 400, code: "bad_request")
            try await expectError(.GET, "/v1/subscriptions/s_none/results", nil, status: 404, code: "unknown_subscription")
            // Nothing above changed anything.
            let streams = try await HTTPCall.call(.GET, base + "/v1/streams")
            #expect(streams["streams"]?.arrayValue?.count == 1)
            #expect(streams["streams"]?.arrayValue?.first?["lastSeq"] == .int(0))
            let channels = try await HTTPCall.call(.GET, base + "/v1/channels")
            #expect(channels["channels"]?.arrayValue?.count == 5)
        }
    }

    @Test func aMisbehavingClientDoesNotDisturbOthers() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "good") { good, goodInbox, _ in
                _ = try await good.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                try await Connection.run(url: broker.webSocketURL, logger: testLogger) { bad in
                    for i in 0..<200 {
                        try await bad.send(text: i % 2 == 0 ? "{garbage \(i)" : #"{"type":"publish","stream":"emergencies","event":{"kind":1}}"#)
                    }
                    _ = try await good.publish(stream: "emergencies", events: [emergency("fire", severity: 1)])
                    #expect(try await goodInbox.notifications(1).map(\.seq) == [1])
                }
            }
        }
    }
}
