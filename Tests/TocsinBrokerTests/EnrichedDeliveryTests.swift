import Foundation
import Synchronization
import Testing
@testable import TocsinBroker
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinHTTPClient
import TocsinStore
import TocsinTesting

/// Channels with `enrich` clauses over a real broker: every notification carries the records a
/// brute-force scan of the dataset finds at the version the notification names (rebuilt from
/// the dataset's change stream), live and replayed, while the dataset is written between
/// events; the change stream itself is watchable; definitions that would break are refused.
@Suite(.timeLimit(.minutes(2)))
struct EnrichedDeliveryTests {
    static let reports: JSONValue = [
        "fields": [["name": "kind", "type": "string"], ["name": "severity", "type": "int"], ["name": "location", "type": "geo"]]
    ]
    static let nearest: JSONValue = [
        "stream": "reports",
        "params": [["name": "lat", "type": "double"], ["name": "lon", "type": "double"], ["name": "km", "type": "double"]],
        "where": "distance(location, point($lat, $lon)) <= $km",
        "enrich": [
            [
                "from": "shelters", "where": "distance(shelters.location, location) <= 5 && shelters.open",
                "orderBy": "distance(shelters.location, location)", "limit": 3, "as": "nearest",
            ],
            ["from": "shelters", "where": "shelters.open == false", "orderBy": "shelters.capacity", "order": "desc", "limit": 2, "as": "closed"],
        ],
    ]

    /// Defines the stream, the dataset and the channel.
    static func define(_ broker: TestBroker) async throws {
        _ = try await HTTPCall.call(.PUT, broker.httpURL + "/v1/streams/reports", body: reports)
        _ = try await HTTPCall.call(.PUT, broker.httpURL + "/v1/datasets/shelters", body: DatasetAPITests.shelters)
        _ = try await HTTPCall.call(.PUT, broker.httpURL + "/v1/channels/ReportsNear", body: nearest)
    }

    /// What each clause must attach to `event`, by scanning `records` (the dataset at some version).
    static func expected(event: GeoPoint, records: [String: [String: JSONValue]]) -> (nearest: [JSONValue], closed: [JSONValue]) {
        func point(_ r: [String: JSONValue]) -> GeoPoint {
            GeoPoint(lat: r["location"]?["lat"]?.doubleValue ?? .nan, lon: r["location"]?["lon"]?.doubleValue ?? .nan)
        }
        let near = records.filter { _, r in r["open"] == true && point(r).distanceKm(to: event) <= 5 }
            .sorted { a, b in
                let (da, db) = (point(a.value).distanceKm(to: event), point(b.value).distanceKm(to: event))
                return da != db ? da < db : a.key < b.key
            }
        let closed = records.filter { _, r in r["open"] == false }
            .sorted { a, b in
                // Descending by capacity, nulls last, then by key.
                switch (a.value["capacity"]?.intValue, b.value["capacity"]?.intValue) {
                case (let x?, let y?) where x != y: return x > y
                case (.some, nil): return true
                case (nil, .some): return false
                default: return a.key < b.key
                }
            }
        return (near.prefix(3).map { .object($0.value) }, closed.prefix(2).map { .object($0.value) })
    }

    /// The dataset at every version, from its change stream.
    static func history(_ broker: TestBroker) async throws -> [Int64: [String: [String: JSONValue]]] {
        let changes = try await broker.broker.store.readEvents(stream: "shelters.changes", after: 0, limit: 100_000)
        var records: [String: [String: JSONValue]] = [:]
        var at: [Int64: [String: [String: JSONValue]]] = [0: [:]]
        for change in changes {
            guard case .object(var o) = try JSONValue.parse(change.json), let id = o["id"]?.stringValue else { continue }
            let kind = o.removeValue(forKey: "change")
            if kind == "delete" { records.removeValue(forKey: id) } else { records[id] = o }
            at[change.seq] = records
        }
        return at
    }

    /// On SQLite and on PostgreSQL (a database of its own on the test process's throwaway server).
    @Test(arguments: [false, true])
    func notificationsCarryWhatAScanFindsAtTheirVersionLiveAndReplayed(postgres: Bool) async throws {
        let database = postgres ? try await PostgresServer.database() : nil
        defer { database?.destroy() }
        // A generous store deadline: on a loaded machine (the whole suite, browsers and all) a
        // throwaway server may take more than the default 5 s to answer.
        let location = try database.map { try PostgresLocation(parsing: $0.url + "?timeout=30") }
        try await TestBroker.with(store: { directory in
            location.map { .postgres(PostgresStore.Configuration(location: $0)) } ?? StoreConfiguration.testing(in: directory)
        }) { broker in
            try await Self.define(broker)
            let live = try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                var rng = SplitMix(seed: 42)
                let centre = GeoPoint(lat: 52.37, lon: 4.90)
                func near() -> JSONValue {
                    ["lat": .double(centre.lat + Double.random(in: -0.08...0.08, using: &rng)),
                     "lon": .double(centre.lon + Double.random(in: -0.12...0.12, using: &rng))]
                }
                var live: [(seq: Int64, enriched: JSONValue, at: GeoPoint)] = []
                let inbox = Inbox(connection)
                _ = try await connection.hello(client: "phone")
                _ = try await connection.subscribe(channel: "ReportsNear", params: ["lat": 52.37, "lon": 4.9, "km": 50])
                for round in 0..<60 {
                    var writes: [JSONValue] = []
                    for _ in 0..<Int.random(in: 0...4, using: &rng) {
                        let id = "s\(Int.random(in: 0..<25, using: &rng))"
                        if Int.random(in: 0..<5, using: &rng) == 0 {
                            writes.append(["delete": .string(id)])
                        } else {
                            var shelter: [String: JSONValue] = ["id": .string(id), "location": near(), "open": .bool(Bool.random(using: &rng))]
                            if Bool.random(using: &rng) { shelter["capacity"] = .int(Int64.random(in: 0...3, using: &rng)) }
                            writes.append(.object(shelter))
                        }
                    }
                    if !writes.isEmpty { _ = try await HTTPCall.call(.POST, broker.httpURL + "/v1/datasets/shelters/records", body: .array(writes)) }
                    let location = near()
                    _ = try await connection.publish(stream: "reports", events: [["kind": "fire", "severity": .int(Int64(round % 5)), "location": location]])
                    let message = try await inbox.next()
                    guard case .notify(_, let seq, .enrichedEvent(_, let enriched)) = message else {
                        throw TestFailure("expected an enriched notification, got \(message.encoded)")
                    }
                    live.append((seq, try JSONValue.parse(enriched), GeoPoint(lat: location["lat"]!.doubleValue!, lon: location["lon"]!.doubleValue!)))
                }
                return live
            }
            let history = try await Self.history(broker)
            let latest = history.keys.max() ?? 0
            var versions: Set<Int64> = []
            for n in live {
                guard let version = n.enriched["nearest"]?["version"]?.intValue, let records = history[version] else {
                    throw TestFailure("notification \(n.seq) names no known version: \(n.enriched.serialized)")
                }
                #expect(n.enriched["closed"]?["version"]?.intValue == version, "both clauses read one table version")
                versions.insert(version)
                let want = Self.expected(event: n.at, records: records)
                #expect(n.enriched["nearest"]?["records"]?.arrayValue == want.nearest, "seq \(n.seq) at version \(version)")
                #expect(n.enriched["closed"]?["records"]?.arrayValue == want.closed, "seq \(n.seq) at version \(version)")
            }
            #expect(versions.count > 10, "the dataset changed between events: \(versions.sorted())")
            #expect(live.contains { !($0.enriched["nearest"]?["records"]?.arrayValue ?? []).isEmpty }, "some events found open shelters")

            // A replay enriches at the version the broker holds when it replays (here: the latest).
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                _ = try await connection.hello(client: "phone")
                let replayed = try await inbox.notifications(live.count)
                for ((_, seq, notification), original) in zip(replayed, live) {
                    guard case .enrichedEvent(_, let text) = notification else { throw TestFailure("replay \(seq) is not enriched") }
                    let enriched = try JSONValue.parse(text)
                    #expect(seq == original.seq)
                    #expect(enriched["nearest"]?["version"]?.intValue == latest)
                    let want = Self.expected(event: original.at, records: history[latest]!)
                    #expect(enriched["nearest"]?["records"]?.arrayValue == want.nearest, "replayed seq \(seq)")
                }
            }
        }
    }

    /// "A shelter opened near you": a channel on the change stream, live.
    @Test func theChangeStreamIsWatchable() async throws {
        try await TestBroker.with { broker in
            try await Self.define(broker)
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/channels/SheltersOpening",
                body: [
                    "stream": "shelters.changes", "params": [["name": "lat", "type": "double"], ["name": "lon", "type": "double"]],
                    "where": "change == \"upsert\" && open && distance(location, point($lat, $lon)) <= 10",
                ])
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                _ = try await connection.hello(client: "phone")
                _ = try await connection.subscribe(channel: "SheltersOpening", params: ["lat": 52.37, "lon": 4.9])
                _ = try await HTTPCall.call(
                    .POST, broker.httpURL + "/v1/datasets/shelters/records",
                    body: [DatasetAPITests.shelter("far", lat: 10), DatasetAPITests.shelter("shut", open: false), DatasetAPITests.shelter("here")])
                let message = try await inbox.next()
                guard case .notify(_, let seq, .event(let json)) = message else { throw TestFailure("got \(message.encoded)") }
                #expect(seq == 3)
                #expect(try JSONValue.parse(json)["id"] == "here")
                #expect(try JSONValue.parse(json)["change"] == "upsert")
                #expect(await inbox.isQuiet(for: .milliseconds(100)))
            }
        }
    }

    @Test func definitionsThatWouldBreakAreRefused() async throws {
        try await TestBroker.with { broker in
            try await Self.define(broker)
            func expect(_ method: HTTPCall.Method, _ path: String, _ body: JSONValue?, status: Int, code: String, _ fragment: String) async throws {
                let reply = try await HTTPCall.send(method, broker.httpURL + path, rawBody: body?.serialized)
                #expect(reply.status == status && reply.body["error"]?["code"]?.stringValue == code, "\(path): \(reply.body.serialized)")
                #expect(reply.body["error"]?["message"]?.stringValue?.contains(fragment) == true, "\(path): \(reply.body.serialized)")
            }
            func channel(_ enrich: JSONValue) -> JSONValue {
                ["stream": "reports", "where": "true", "enrich": enrich]
            }
            try await expect(.PUT, "/v1/channels/X", channel([["from": "nope", "where": "true", "limit": 1]]), status: 422, code: "invalid_channel", "not a dataset")
            try await expect(
                .PUT, "/v1/channels/X", channel([["from": "shelters", "where": "shelters.capacity > 1", "limit": 1]]), status: 422,
                code: "invalid_channel", "index")
            try await expect(
                .PUT, "/v1/channels/X", channel([["from": "shelters", "where": "shelters.open", "limit": 1], ["from": "shelters", "where": "shelters.open", "limit": 2]]),
                status: 422, code: "invalid_channel", "give one another 'as'")
            try await expect(.DELETE, "/v1/datasets/shelters", nil, status: 409, code: "conflict", "ReportsNear")
            // Empty, so redefinable, but not without the field the channel orders by.
            let fewer: JSONValue = ["fields": [["name": "id", "type": "string"], ["name": "location", "type": "geo"], ["name": "open", "type": "bool"]], "key": "id", "index": ["location", "open"]]
            try await expect(.PUT, "/v1/datasets/shelters", fewer, status: 409, code: "conflict", "ReportsNear")
            #expect(try await HTTPCall.send(.DELETE, broker.httpURL + "/v1/channels/ReportsNear", rawBody: nil).status == 204)
            #expect(try await HTTPCall.send(.DELETE, broker.httpURL + "/v1/datasets/shelters", rawBody: nil).status == 204)
        }
    }
}

/// Two brokers sharing one SQLite file (as `tocsin dev` runs them): a location written through
/// one moves a subscription on the other, and a shelter written through one enriches the
/// other's notifications — each broker's tables follow the change streams other processes append.
@Suite(.timeLimit(.minutes(1)))
struct DatasetsAcrossBrokersTests {
    @Test func writesThroughOneBrokerReachTheOthersTables() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        // As `tocsin dev` runs them: each polls the file for the other's commits.
        let shared: @Sendable (String) -> StoreConfiguration = { .sqlite(.init(path: $0 + "/tocsin.sqlite", synchronousFull: false, pollInterval: .milliseconds(20))) }
        try await TestBroker.with(directory: directory, store: shared) { a in
            try await EnrichedDeliveryTests.define(a)
            _ = try await HTTPCall.call(
                .PUT, a.httpURL + "/v1/datasets/userLocations",
                body: ["fields": [["name": "client", "type": "string"], ["name": "location", "type": "geo"]], "key": "client"])
            _ = try await HTTPCall.call(
                .PUT, a.httpURL + "/v1/datasets/userLocations/records/walker", body: ["client": "walker", "location": ["lat": 52.37, "lon": 4.90]])
            _ = try await HTTPCall.call(.POST, a.httpURL + "/v1/datasets/shelters/records", body: DatasetAPITests.shelter("s1", lat: 52.371))
            try await TestBroker.with(directory: directory, store: shared) { b in
                try await Connection.run(url: b.webSocketURL, logger: testLogger) { connection in
                    let inbox = Inbox(connection)
                    _ = try await connection.hello(client: "walker")
                    _ = try await connection.subscribe(
                        channel: "ReportsNear", params: ["lat": ["bind": "userLocations.location.lat"], "lon": ["bind": "userLocations.location.lon"], "km": 2])
                    // Written through a: a shelter near Utrecht, and the walker moves there.
                    _ = try await HTTPCall.call(
                        .PUT, a.httpURL + "/v1/datasets/shelters/records/u1",
                        body: ["id": "u1", "location": ["lat": 52.091, "lon": 5.121], "open": true])
                    _ = try await HTTPCall.call(
                        .PUT, a.httpURL + "/v1/datasets/userLocations/records/walker", body: ["client": "walker", "location": ["lat": 52.09, "lon": 5.12]])
                    // Reports near Utrecht, published through a until b delivers one (b applies the move within milliseconds).
                    let first = Mutex<ServerMessage?>(nil)
                    try await waitUntil("b moved the walker to Utrecht") {
                        _ = try? await HTTPCall.call(.POST, a.httpURL + "/v1/streams/reports/events", body: ["kind": "fire", "severity": 3, "location": ["lat": 52.092, "lon": 5.118]])
                        guard let message = try? await inbox.next(timeout: .milliseconds(200)) else { return false }
                        first.withLock { $0 = message }
                        return true
                    }
                    let delivered = first.withLock { $0 }
                    guard case .notify(_, _, .enrichedEvent(_, let enriched))? = delivered else { throw TestFailure("got \(String(describing: delivered?.encoded))") }
                    let nearest = try JSONValue.parse(enriched)["nearest"]?["records"]?.arrayValue?.compactMap { $0["id"]?.stringValue }
                    #expect(nearest == ["u1"], "b's shelters table has the shelter written through a: \(enriched)")
                    // Amsterdam is 35 km away now: nothing from there. (Reports near Utrecht that the
                    // wait above published before b applied the move may still come, late.)
                    _ = try await HTTPCall.call(.POST, a.httpURL + "/v1/streams/reports/events", body: ["kind": "fire", "severity": 3, "location": ["lat": 52.37, "lon": 4.9]])
                    while let late = try? await inbox.next(timeout: .milliseconds(300)) {
                        guard case .notify(_, _, .enrichedEvent(let event, _)) = late else { throw TestFailure("got \(late.encoded)") }
                        let lat = try JSONValue.parse(event)["location"]?["lat"]?.doubleValue
                        #expect(lat == 52.092, "only reports near Utrecht: \(event)")
                    }
                }
            }
        }
    }
}

/// Bindings that do not read are refused with `invalid_params`, naming the parameter and why.
@Suite(.timeLimit(.minutes(1)))
struct BadBindingTests {
    @Test func badBindingsAreRefusedWithTheReason() async throws {
        try await TestBroker.with { broker in
            try await EnrichedDeliveryTests.define(broker)
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/datasets/userLocations",
                body: ["fields": [["name": "client", "type": "string"], ["name": "location", "type": "geo"], ["name": "floor", "type": "int", "optional": true]], "key": "client"])
            _ = try await HTTPCall.call(.PUT, broker.httpURL + "/v1/datasets/byNumber", body: ["fields": [["name": "n", "type": "int"], ["name": "at", "type": "geo"]], "key": "n"])
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                _ = try await connection.hello(client: "phone")
                func refusal(_ lat: JSONValue) async throws -> String {
                    do {
                        _ = try await connection.subscribe(channel: "ReportsNear", params: ["lat": lat, "lon": 4.9, "km": 2])
                        return "accepted"
                    } catch let error as TocsinError {
                        #expect(error.code == .invalidParams, "\(error)")
                        return error.message
                    }
                }
                let cases: [(JSONValue, String)] = [
                    (["bind": "nope.location.lat"], "there is no dataset 'nope'"),
                    (["bind": "userLocations"], "expected <dataset>.<field>"),
                    (["bind": "userLocations.place.lat"], "has no field 'place'"),
                    (["bind": "userLocations.location"], "the parameter is double and the field is geo"),
                    (["bind": "userLocations.floor.lat"], "only a geo field has parts"),
                    (["bind": "byNumber.at.lat"], "keyed by int"),
                    (["bind": "userLocations.location.lat"], "has no record 'phone' yet: write it first"),
                ]
                for (value, fragment) in cases {
                    let message = try await refusal(value)
                    #expect(message.contains(fragment), "\(value.serialized): \(message)")
                }
                // Its own record, without the field the binding reads.
                #expect(try await connection.write(dataset: "userLocations", [["client": "phone", "location": ["lat": 52.37, "lon": 4.9]]]) > 0)
                #expect(try await refusal(["bind": "userLocations.location.lat"]) == "accepted")
            }
        }
    }

    /// A bound subscription is followed while it is attached, and let go (with its session) once
    /// it is unsubscribed or its connection closes: a client that never returns costs nothing.
    @Test func aBoundSubscriptionIsLetGoWhenItsConnectionCloses() async throws {
        try await TestBroker.with { broker in
            try await EnrichedDeliveryTests.define(broker)
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/datasets/userLocations",
                body: ["fields": [["name": "client", "type": "string"], ["name": "location", "type": "geo"]], "key": "client"])
            let bound = broker.broker.boundSubscriptions
            let params: [String: JSONValue] = ["lat": ["bind": "userLocations.location.lat"], "lon": ["bind": "userLocations.location.lon"], "km": 2]
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                _ = try await connection.hello(client: "phone")
                _ = try await connection.write(dataset: "userLocations", [["client": "phone", "location": ["lat": 52.37, "lon": 4.9]]])
                let first = try await connection.subscribe(channel: "ReportsNear", params: params)
                _ = try await connection.subscribe(channel: "ReportsNear", params: params.merging(["km": 5]) { $1 })
                #expect(bound.count == 2)
                try await connection.unsubscribe(first.subscription)
                #expect(bound.count == 1)
            }
            try await waitUntil("the closed connection's subscription is let go") { bound.count == 0 }
        }
    }
}
