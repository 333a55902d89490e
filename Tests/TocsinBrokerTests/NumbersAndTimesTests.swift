import GRDB
import Testing
import TocsinClient
import TocsinCore
import TocsinStore
import TocsinTesting

/// Numbers and times a client chooses: refused at the edge when out of range, exact when in it;
/// stored definitions a broker cannot use never stop it from serving the rest.
@Suite(.timeLimit(.minutes(1)))
struct NumbersAndTimesTests {
    func emergency(time: JSONValue, kind: String = "fire") -> JSONValue {
        .object([
            "kind": .string(kind), "severity": .int(3), "location": .object(["lat": .double(52.37), "lon": .double(4.89)]),
            "area": .string("Amsterdam"), "time": time,
        ])
    }

    func putEverything(_ broker: TestBroker, period: String? = nil) async throws {
        var body: [String: JSONValue] = ["stream": "emergencies", "where": "true"]
        if let period { body["mode"] = "repetitive"; body["period"] = .string(period) }
        _ = try await HTTPCall.call(.PUT, "\(broker.httpURL)/v1/channels/Everything", body: .object(body))
    }

    @Test func timesOutsideTheRangeOrImpossibleAreRefusedAndNothingIsStored() async throws {
        try await TestBroker.with { broker in
            let url = "\(broker.httpURL)/v1/streams/emergencies/events"
            for time: JSONValue in [
                "0000-12-31T23:59:59Z", "-0001-06-01T00:00:00Z", .int(TimeFormat.minMillis - 1), .int(-62_135_596_800_001_000),
                "10000-01-01T00:00:00Z", .int(TimeFormat.maxMillis + 1), "2026-02-30T12:00:00Z", "2026-11-23T24:00:00Z",
                "2026-11-23T12:60:00Z", "2026-12-31T23:59:60Z",
            ] {
                let reply = try await HTTPCall.send(.POST, url, rawBody: emergency(time: time).serialized)
                #expect(reply.status == 422, "\(time)")
                #expect(reply.body["error"]?["code"] == "schema_violation", "\(time): \(reply.body)")
            }
            try await connect(broker, client: "early") { connection, _, _ in
                let error = await #expect(throws: TocsinError.self) {
                    _ = try await connection.publish(stream: "emergencies", events: [emergency(time: "0000-06-01T00:00:00Z")])
                }
                #expect(error?.code == .schemaViolation)
                #expect(error?.message.contains("0001-01-01T00:00:00Z") == true)
            }
            let stored = try await HTTPCall.call(.GET, "\(url)?after=0")
            #expect(stored["events"] == .array([]))
        }
    }

    /// What is acknowledged is delivered, exactly: the edges of the range and milliseconds that
    /// used to come back one early reach a `where: true` subscription, `fetch` and the log unchanged.
    @Test func acknowledgedTimesAreDeliveredExactly() async throws {
        try await TestBroker.with { broker in
            try await putEverything(broker)
            let times: [(JSONValue, String)] = [
                ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"), (.int(TimeFormat.maxMillis), "9999-12-31T23:59:59.999Z"),
                ("2026-11-23T12:00:00.123Z", "2026-11-23T12:00:00.123Z"), (.int(1_795_435_200_123), "2026-11-23T12:00:00.123Z"),
                ("2026-11-23T13:00:00.5119+01:00", "2026-11-23T12:00:00.511Z"), (.int(-1), "1969-12-31T23:59:59.999Z"),
            ]
            try await connect(broker, client: "exact") { connection, inbox, _ in
                let sub = try await connection.subscribe(channel: "Everything", params: [:])
                _ = try await connection.publish(stream: "emergencies", events: times.map { emergency(time: $0.0) })
                let received = try await inbox.notifications(times.count).map { $0.2.event?["time"] }
                #expect(received == times.map { .string($0.1) })
                let fetched = try await connection.fetch(subscription: sub.subscription, after: 0)
                #expect(try fetched.events.map { try JSONValue.parse($0.json)["time"] } == times.map { .string($0.1) })
            }
            let stored = try await HTTPCall.call(.GET, "\(broker.httpURL)/v1/streams/emergencies/events?after=0")
            #expect(stored["events"]?.arrayValue?.map { $0["event"]?["time"] } == times.map { .string($0.1) })
        }
    }

    @Test func hugeRetentionsAndPeriodsAreRefused() async throws {
        try await TestBroker.with { broker in
            let stream = "\(broker.httpURL)/v1/streams/numbers"
            func put(_ retention: JSONValue) async throws -> HTTPCall.Reply {
                try await HTTPCall.send(
                    .PUT, stream, rawBody: JSONValue.object(["fields": [["name": "n", "type": "int"]], "retention": retention]).serialized)
            }
            for retention: JSONValue in [
                ["maxAgeSeconds": .int(.max)], ["maxAgeSeconds": .int(9_223_372_036_854_775)], ["maxAgeSeconds": .int(Retention.maxAgeSecondsLimit + 1)],
                ["maxEvents": .int(.max)], ["maxEvents": .int(Retention.maxEventsLimit + 1)], ["maxAgeSeconds": .double(1e300)],
            ] {
                let reply = try await put(retention)
                #expect(reply.status == 422, "\(retention)")
                #expect(reply.body["error"]?["code"] == "invalid_stream", "\(retention): \(reply.body)")
            }
            let atLimits = try await put(["maxAgeSeconds": .int(Retention.maxAgeSecondsLimit), "maxEvents": .int(Retention.maxEventsLimit)])
            #expect(atLimits.status == 201)
            #expect(try await broker.broker.store.enforceRetention(nowMillis: WallClock.nowMillis()) == 0)

            let channel = "\(broker.httpURL)/v1/channels/Slow"
            for period in ["106751991167d", "2562047788015h", "9223372036854775807ms", "31d", "2592000001ms", "9ms"] {
                let reply = try await HTTPCall.send(
                    .PUT, channel,
                    rawBody: JSONValue.object(["stream": "emergencies", "where": "true", "mode": "repetitive", "period": .string(period)]).serialized)
                #expect(reply.status == 422, "\(period)")
                #expect(reply.body["error"]?["code"] == "invalid_channel", "\(period): \(reply.body)")
            }
            // The longest period is accepted, and a subscriber's hello and the ticker live with it.
            try await putEverything(broker, period: "30d")
            try await connect(broker, client: "patient") { connection, _, _ in
                _ = try await connection.subscribe(channel: "Everything", params: [:])
            }
            try await connect(broker, client: "patient") { connection, _, welcome in
                #expect(welcome.subscriptions.map(\.channel) == ["Everything"])
                try await connection.ping()
            }
        }
    }

    /// A repetitive push channel with a long period sends a batch as soon as it is full.
    @Test func aFullRepetitiveBatchIsSentWithoutWaitingForThePeriod() async throws {
        try await TestBroker.with { broker in
            try await putEverything(broker, period: "30d")
            try await connect(broker, client: "batched") { connection, inbox, _ in
                _ = try await connection.subscribe(channel: "Everything", params: [:])
                let now = JSONValue.string(TimeFormat.format(WallClock.nowMillis()))
                let seqs = try await connection.publish(
                    stream: "emergencies", events: Array(repeating: emergency(time: now), count: 1001))
                let batch = try await inbox.notifications(1)
                guard case .events(let events) = batch[0].2 else { throw TestFailure("expected a batch, got \(batch[0].2)") }
                #expect(events.map(\.seq) == Array(seqs.prefix(1000)))
                #expect(batch[0].seq == seqs[999])
                // The 1001st waits for the period.
                #expect(await inbox.isQuiet(for: .milliseconds(300)))
            }
        }
    }

    /// Definitions stored by older versions (under rules that have since tightened) or damaged:
    /// the broker starts, leaves out what it cannot use, and serves everything else.
    @Test func aBrokerOverAStoreWithBadDefinitionsStartsAndServesTheRest() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        try await TestBroker.with(directory: directory) { broker in
            _ = try await HTTPCall.call(
                .PUT, "\(broker.httpURL)/v1/streams/old",
                body: ["fields": [["name": "n", "type": "int"]], "retention": ["maxAgeSeconds": 86400]])
            try await putEverything(broker, period: "1s")
            _ = try await HTTPCall.call(
                .PUT, "\(broker.httpURL)/v1/channels/Gone", body: ["stream": "emergencies", "where": "severity >= 1"])
            try await connect(broker, client: "durable") { connection, _, _ in
                _ = try await connection.subscribe(channel: "Everything", params: [:])
                _ = try await connection.publish(stream: "emergencies", events: [emergency(time: "2026-11-23T12:00:00Z")])
            }
        }
        // The first broker's store finishes closing on its commit thread (a last checkpoint):
        // wait for its lock as the broker's own connections do.
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let database = try DatabaseQueue(path: directory + "/tocsin.sqlite", configuration: configuration)
        try await database.write { db in
            func update(_ sql: String) throws {
                try db.execute(sql: sql)
                #expect(db.changesCount == 1, "\(sql)")
            }
            try update(#"UPDATE streams SET definition = replace(definition, '"maxAgeSeconds":86400', '"maxAgeSeconds":9223372036854775807') WHERE name = 'old'"#)
            try update(#"UPDATE channels SET definition = replace(definition, '"period":"1s"', '"period":"106751991167d"') WHERE name = 'Everything'"#)
            try update(#"UPDATE channels SET definition = replace(definition, 'severity >= 1', 'sevrity >= 1') WHERE name = 'Gone'"#)
            try update(
                #"INSERT INTO streams (name, definition, epoch, last_seq, first_seq, created_at) VALUES ('broken', '{"name":"broken","fields":[{"name":"x","type":"colour"}]}', 'e1', 0, 1, 0)"#)
            // An event acknowledged before times were bounded, then a good one (published now:
            // the stream keeps a week).
            let bad = emergency(time: "0000-12-31T23:59:59Z").serialized
            let good = emergency(time: "2026-11-23T12:00:01Z").serialized
            try db.execute(
                sql: "INSERT INTO events (stream, seq, published_at, body) VALUES ('emergencies', 2, ?, ?), ('emergencies', 3, ?, ?)",
                arguments: [WallClock.nowMillis(), bad, WallClock.nowMillis(), good])
            try update("UPDATE streams SET last_seq = 3 WHERE name = 'emergencies'")
        }
        try database.close()

        try await TestBroker.with(directory: directory) { broker in
            let streams = try await HTTPCall.call(.GET, "\(broker.httpURL)/v1/streams")
            #expect(Set(streams["streams"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []) == ["emergencies", "old"])
            // The old retention no longer traps, here or in the broker's own retention task.
            _ = try await broker.broker.store.enforceRetention(nowMillis: WallClock.nowMillis())
            try await connect(broker, client: "durable") { connection, inbox, welcome in
                // Its subscription to the channel left out cannot resume, and says so.
                #expect(welcome.subscriptions.isEmpty)
                guard case .error(nil, "unknown_channel", _, _) = try await inbox.next() else { throw TestFailure("expected unknown_channel") }
                for channel in ["Everything", "Gone"] {
                    await #expect(throws: TocsinError(.unknownChannel, "no channel named '\(channel)'")) {
                        _ = try await connection.subscribe(channel: channel, params: [:])
                    }
                }
                // Replay steps over the event it cannot read, and live delivery goes on.
                let fires = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"], from: .earliest)
                let replayed = try await inbox.notifications(2).map(\.seq)
                #expect(replayed == [1, 3])
                let seqs = try await connection.publish(stream: "emergencies", events: [emergency(time: "2026-11-23T12:00:02Z")])
                #expect(try await inbox.notifications(1).map(\.seq) == seqs)
                #expect(try await connection.fetch(subscription: fires.subscription, after: 0).events.map(\.seq) == [1, 3] + seqs)
            }
            // What was left out can be deleted (with its subscriptions) or replaced.
            let delete = try await HTTPCall.send(.DELETE, "\(broker.httpURL)/v1/channels/Everything")
            #expect(delete.status == 204)
            #expect(try await HTTPCall.send(.DELETE, "\(broker.httpURL)/v1/channels/Everything").status == 404)
            try await putEverything(broker, period: "1s")
            let redefined = try await HTTPCall.send(
                .PUT, "\(broker.httpURL)/v1/channels/Gone", rawBody: #"{"stream":"emergencies","where":"severity >= 2"}"#)
            #expect(redefined.status == 200)
            let keep = try await HTTPCall.send(.PUT, "\(broker.httpURL)/v1/streams/broken", rawBody: #"{"fields":[{"name":"x","type":"int"}]}"#)
            #expect(keep.status == 409)
            let replace = try await HTTPCall.send(
                .PUT, "\(broker.httpURL)/v1/streams/broken?recreate=true", rawBody: #"{"fields":[{"name":"x","type":"int"}]}"#)
            #expect(replace.status == 201)
        }
    }
}
