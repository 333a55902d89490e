import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

/// What docs/protocol.md promises, checked over real sockets.
@Suite(.timeLimit(.minutes(1)))
struct ProtocolAgreementTests {
    /// Sends a raw frame and returns the next frame.
    func reply(to text: String, on connection: Connection, inbox: Inbox) async throws -> ServerMessage {
        try await connection.send(text: text)
        return try await inbox.next()
    }

    @Test func nullFieldsAndParametersCountAsAbsent() async throws {
        try await TestBroker.with { broker in
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                guard case .welcome("1", _, _, let client, _) = try await reply(to: #"{"type":"hello","id":"1","client":null}"#, on: connection, inbox: inbox)
                else { throw TestFailure("expected welcome") }
                #expect(client.hasPrefix("anon-"))

                // A parameter with a default takes it; `from` and `params` null are their defaults.
                let near = try await reply(
                    to: #"{"type":"subscribe","id":"2","channel":"EmergenciesNearMe","params":{"lat":52.37,"lon":4.89,"radiusKm":25,"minSeverity":null},"from":null}"#,
                    on: connection, inbox: inbox)
                guard case .subscribed("2", let info) = near else { throw TestFailure("expected subscribed, got \(near.encoded)") }
                #expect(info.params["minSeverity"] == .int(1))
                let same = try await connection.subscribe(channel: "EmergenciesNearMe", params: ["lat": 52.37, "lon": 4.89, "radiusKm": 25])
                #expect(same.subscription == info.subscription)
                // `params: null` is no parameters: EmergenciesOfKind then misses its `kind`.
                let none = try await reply(
                    to: #"{"type":"subscribe","id":"3","channel":"EmergenciesOfKind","params":null}"#, on: connection, inbox: inbox)
                guard case .error("3", "invalid_params", _, _) = none else { throw TestFailure("got \(none.encoded)") }
            }
        }
    }

    @Test func nullForARequiredParameterIsMissingAndOtherNullFieldsAreAbsent() async throws {
        try await TestBroker.with { broker in
            try await connect(broker, client: "nulls") { connection, inbox, _ in
                let missing = try await reply(
                    to: #"{"type":"subscribe","id":"4","channel":"EmergenciesNearMe","params":{"lat":null,"lon":4.89,"radiusKm":25}}"#,
                    on: connection, inbox: inbox)
                guard case .error("4", "invalid_params", let message, _) = missing else { throw TestFailure("got \(missing.encoded)") }
                #expect(message.contains("lat"))

                let sub = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                let fetched = try await reply(
                    to: #"{"type":"fetch","id":"5","subscription":"\#(sub.subscription)","after":null,"limit":null}"#, on: connection, inbox: inbox)
                guard case .fetched("5", _, _, 0) = fetched else { throw TestFailure("expected fetched, got \(fetched.encoded)") }

                let event = emergency("flood", severity: 2).serialized
                let published = try await reply(
                    to: #"{"type":"publish","id":"6","stream":"emergencies","event":\#(event),"events":null,"key":null}"#, on: connection, inbox: inbox)
                guard case .published("6", _, _, let seqs, false) = published else { throw TestFailure("expected published, got \(published.encoded)") }
                #expect(seqs.count == 1)

                let noChannel = try await reply(to: #"{"type":"subscribe","id":"7","channel":null}"#, on: connection, inbox: inbox)
                guard case .error("7", "bad_request", _, _) = noChannel else { throw TestFailure("got \(noChannel.encoded)") }
            }
        }
    }

    @Test func aNumericIdWithAZeroFractionIsThatInteger() async throws {
        try await TestBroker.with { broker in
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                #expect(try await reply(to: #"{"type":"ping","id":3.0}"#, on: connection, inbox: inbox) == .pong(id: "3"))
                #expect(try await reply(to: #"{"type":"ping","id":7}"#, on: connection, inbox: inbox) == .pong(id: "7"))
                let fraction = try await reply(to: #"{"type":"ping","id":3.5}"#, on: connection, inbox: inbox)
                guard case .error(nil, "bad_request", _, _) = fraction else { throw TestFailure("got \(fraction.encoded)") }
            }
        }
    }

    @Test func aClientChosenIdCannotStartWithTheAnonymousPrefix() async throws {
        try await TestBroker.with { broker in
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let refused = await #expect(throws: TocsinError.self) { _ = try await connection.hello(client: "anon-1234") }
                #expect(refused?.code == .badRequest)
                #expect(refused?.message.contains("anon-") == true)
                // The connection has not said hello yet: it still can.
                let welcome = try await connection.hello(client: "anonymous-fan")
                #expect(welcome.client == "anonymous-fan")
            }
        }
    }

    @Test func assignIsCheckedOnAStandaloneBrokerAndOnlyTakesGet() async throws {
        try await TestBroker.with { broker in
            let noClient = try await HTTPCall.send(.GET, broker.httpURL + "/v1/assign")
            #expect(noClient.status == 400)
            #expect(noClient.body["error"]?["code"] == "bad_request")
            let halfLocation = try await HTTPCall.send(.GET, broker.httpURL + "/v1/assign?client=a&lat=52")
            #expect(halfLocation.status == 400)
            let fine = try await HTTPCall.send(.GET, broker.httpURL + "/v1/assign?client=a")
            #expect(fine.status == 200)
            #expect(fine.body["broker"]?["id"] == "broker-1")
            for method in [HTTPCall.Method.POST, .PUT, .DELETE] {
                let wrong = try await HTTPCall.send(method, broker.httpURL + "/v1/assign?client=a")
                #expect(wrong.status == 405, "\(method)")
                #expect(wrong.body["error"]?["code"] == "method_not_allowed")
            }
        }
        try await TestController.with { controller in
            let wrong = try await HTTPCall.send(.POST, controller.url + "/v1/assign?client=a")
            #expect(wrong.status == 405)
            #expect(wrong.body["error"]?["code"] == "method_not_allowed")
        }
    }

    @Test func dotAndDotDotAreNoNames() async throws {
        for name in [".", ".."] {
            #expect(throws: TocsinError.self) { try StreamDefinition(name: name, json: ["fields": [["name": "x", "type": "int"]]]) }
            let channel = #expect(throws: TocsinError.self) {
                try ChannelDefinition(name: name, json: ["stream": "emergencies", "where": "severity > 1"])
            }
            #expect(channel?.code == .invalidChannel)
        }
        #expect(Identifier.isValidName("a.b") && Identifier.isValidName("...") && Identifier.isValidName(".hidden"))
        try await TestBroker.with { broker in
            for name in [".", ".."] {
                let put = try await HTTPCall.send(.PUT, broker.httpURL + "/v1/streams/" + name, rawBody: #"{"fields":[{"name":"x","type":"int"}]}"#)
                #expect(put.status == 422, "\(name)")
                #expect(put.body["error"]?["code"] == "invalid_stream", "\(name)")
            }
        }
    }
}
