import Foundation
import Testing
import TocsinClient
import TocsinCore
import TocsinHTTPClient
import TocsinTesting

/// The dataset routes over real HTTP: definitions, single and batch writes, all-or-nothing
/// batches, versions, paging, and every refusal with its code.
@Suite(.timeLimit(.minutes(1)))
struct DatasetAPITests {
    static let shelters: JSONValue = [
        "fields": [
            ["name": "id", "type": "string"], ["name": "location", "type": "geo"], ["name": "open", "type": "bool"],
            ["name": "capacity", "type": "int", "optional": true],
        ],
        "key": "id", "index": ["location", "open"],
    ]

    static func shelter(_ id: String, open: Bool = true, lat: Double = 52.37) -> JSONValue {
        ["id": .string(id), "location": ["lat": .double(lat), "lon": 4.9], "open": .bool(open)]
    }

    @Test func writesAreVersionedValidatedWholeAndPaged() async throws {
        try await TestBroker.with { broker in
            let base = broker.httpURL + "/v1/datasets"
            let created = try await HTTPCall.send(.PUT, base + "/shelters", rawBody: Self.shelters.serialized)
            #expect(created.status == 201)
            #expect(try await HTTPCall.send(.PUT, base + "/shelters", rawBody: Self.shelters.serialized).status == 200)

            let batch = try await HTTPCall.call(.POST, base + "/shelters/records", body: .array((0..<5).map { Self.shelter("s\($0)") }))
            // The version is the seq of the dataset's change stream: one event per write.
            #expect(batch == ["type": "written", "dataset": "shelters", "version": 5, "written": 5])
            // One bad record refuses the whole batch: nothing stored, the version unchanged.
            let bad = try await HTTPCall.send(
                .POST, base + "/shelters/records", rawBody: JSONValue.array([Self.shelter("s9"), ["id": "s10", "open": true]]).serialized)
            #expect(bad.status == 422)
            #expect(bad.body["error"]?["code"] == "schema_violation")
            #expect(bad.body["error"]?["message"]?.stringValue?.hasPrefix("write 1: ") == true, "\(bad.body)")
            let mixed = try await HTTPCall.call(.POST, base + "/shelters/records", body: [Self.shelter("s1", open: false), ["delete": "s2"]])
            #expect(mixed["version"] == 7)
            #expect(try await HTTPCall.call(.PUT, base + "/shelters/records/s7", body: Self.shelter("s7"))["version"] == 8)
            #expect(try await HTTPCall.call(.DELETE, base + "/shelters/records/s0")["version"] == 9)

            let info = try await HTTPCall.call(.GET, base + "/shelters")
            #expect(info["version"] == 9 && info["count"] == 4 && info["key"] == "id")
            #expect(try await HTTPCall.call(.GET, base)["datasets"]?.arrayValue?.first?["name"] == "shelters")

            // Pages of two, in key order, following `next`.
            var ids: [String] = []
            var next: String? = nil
            repeat {
                let query = "?limit=2" + (next.map { "&after=" + ($0.addingPercentEncodingForQuery) } ?? "")
                let page = try await HTTPCall.call(.GET, base + "/shelters/records" + query)
                #expect(page["version"] == 9)
                for record in page["records"]?.arrayValue ?? [] { ids.append(record["id"]?.stringValue ?? "?") }
                next = page["next"]?.stringValue
            } while next != nil
            #expect(ids == ["s1", "s3", "s4", "s7"])
            let s1 = try await HTTPCall.call(.GET, base + "/shelters/records?limit=1")
            #expect(s1["records"]?.arrayValue?.first?["open"] == false)
        }
    }

    @Test func refusalsHaveStableCodes() async throws {
        try await TestBroker.with { broker in
            let base = broker.httpURL + "/v1/datasets"
            func expectError(_ method: HTTPCall.Method, _ path: String, _ body: String?, status: Int, code: String) async throws {
                let reply = try await HTTPCall.send(method, base + path, rawBody: body)
                #expect(reply.status == status, "\(method) \(path): \(reply.body.serialized)")
                #expect(reply.body["error"]?["code"]?.stringValue == code, "\(method) \(path): \(reply.body.serialized)")
            }
            _ = try await HTTPCall.call(.PUT, base + "/shelters", body: Self.shelters)
            _ = try await HTTPCall.call(.PUT, base + "/counts", body: ["fields": [["name": "n", "type": "int"]], "key": "n"])
            try await expectError(.PUT, "/bad-name", Self.shelters.serialized, status: 422, code: "invalid_dataset")
            try await expectError(.PUT, "/x", #"{"fields":[{"name":"id","type":"double"}],"key":"id"}"#, status: 422, code: "invalid_dataset")
            try await expectError(.POST, "/nope/records", Self.shelter("a").serialized, status: 404, code: "unknown_dataset")
            try await expectError(.GET, "/nope", nil, status: 404, code: "unknown_dataset")
            try await expectError(.GET, "/nope/records", nil, status: 404, code: "unknown_dataset")
            try await expectError(.DELETE, "/nope", nil, status: 404, code: "unknown_dataset")
            try await expectError(.POST, "/shelters/records", "[]", status: 400, code: "bad_request")
            try await expectError(.POST, "/shelters/records", "{oops", status: 400, code: "bad_json")
            try await expectError(.POST, "/shelters/records", #"{"delete": 7}"#, status: 422, code: "schema_violation")
            try await expectError(.PUT, "/shelters/records/other", Self.shelter("a").serialized, status: 400, code: "bad_request")
            try await expectError(.DELETE, "/counts/records/seven", nil, status: 400, code: "bad_request")
            try await expectError(.GET, "/shelters/records?limit=0", nil, status: 400, code: "bad_request")
            // A key with the character U+0000 (PostgreSQL's text cannot hold it), in a URL and in a body.
            try await expectError(.DELETE, "/shelters/records/a%00b", nil, status: 400, code: "bad_request")
            // The key in the path is percent-decoded: a key with a space is reachable.
            #expect(try await HTTPCall.call(.PUT, base + "/shelters/records/a%20b", body: Self.shelter("a b"))["written"] == 1)
            #expect(try await HTTPCall.call(.DELETE, base + "/shelters/records/a%20b")["written"] == 1)
            try await expectError(.POST, "/shelters/records", #"{"delete": "a\u0000b"}"#, status: 422, code: "schema_violation")
            _ = try await HTTPCall.call(.PUT, base + "/shelters/records/a", body: Self.shelter("a"))
            // A dataset holding records keeps its definition.
            let changed = Self.shelters.serialized.replacingOccurrences(of: #""index":["location","open"]"#, with: #""index":[]"#)
            #expect(changed != Self.shelters.serialized)
            try await expectError(.PUT, "/shelters", changed, status: 409, code: "conflict")
            #expect(try await HTTPCall.call(.PUT, base + "/counts/records/7", body: ["n": 7])["version"] == 1)
            // The change stream: listed like any stream, written only through the dataset, and
            // no stream may take a change stream's name.
            let streams = broker.httpURL + "/v1/streams"
            #expect(try await HTTPCall.call(.GET, streams + "/counts.changes")["lastSeq"] == 1)
            let published = try await HTTPCall.send(.POST, streams + "/counts.changes/events", rawBody: #"{"n":8,"change":"upsert"}"#)
            #expect(published.status == 409 && published.body["error"]?["code"] == "conflict", "\(published.body.serialized)")
            let named = try await HTTPCall.send(.PUT, streams + "/mine.changes", rawBody: #"{"fields":[{"name":"n","type":"int"}]}"#)
            #expect(named.status == 422 && named.body["error"]?["code"] == "invalid_stream", "\(named.body.serialized)")
            // A dataset whose change stream a channel watches stays until the channel goes.
            _ = try await HTTPCall.call(.PUT, broker.httpURL + "/v1/channels/countsSeen", body: ["stream": "counts.changes", "where": "n > 1"])
            try await expectError(.DELETE, "/counts", nil, status: 409, code: "conflict")
            #expect(try await HTTPCall.send(.DELETE, broker.httpURL + "/v1/channels/countsSeen", rawBody: nil).status == 204)
            #expect(try await HTTPCall.send(.DELETE, base + "/counts", rawBody: nil).status == 204)
            try await expectError(.GET, "/counts/records", nil, status: 404, code: "unknown_dataset")
            #expect(try await HTTPCall.send(.GET, streams + "/counts.changes", rawBody: nil).status == 404)
        }
    }
}

@Suite(.timeLimit(.minutes(1)))
struct DatasetWebSocketTests {
    /// A connection writes its own records (key = its client id) and nothing else.
    @Test func aConnectionWritesOnlyItsOwnRecords() async throws {
        try await TestBroker.with { broker in
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/datasets/userLocations",
                body: ["fields": [["name": "client", "type": "string"], ["name": "location", "type": "geo"]], "key": "client", "index": ["location"]])
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                func send(_ frame: String) async throws -> ServerMessage {
                    try await connection.send(text: frame)
                    return try await inbox.next()
                }
                let early = try await send(#"{"type":"write","id":"0","dataset":"userLocations","writes":[{"client":"phone1","location":{"lat":1,"lon":2}}]}"#)
                #expect(early.encoded.contains("not_identified"), "\(early.encoded)")
                _ = try await connection.hello(client: "phone1")
                let written = try await send(#"{"type":"write","id":"1","dataset":"userLocations","writes":[{"client":"phone1","location":{"lat":1,"lon":2}}]}"#)
                #expect(written == .written(id: "1", dataset: "userLocations", version: 1, written: 1))
                // The client library's form.
                #expect(try await connection.write(dataset: "userLocations", [["client": "phone1", "location": ["lat": 3, "lon": 4]]]) == 2)
                // Another's key anywhere in the batch refuses the whole batch.
                let other = try await send(
                    #"{"type":"write","id":"3","dataset":"userLocations","writes":[{"client":"phone1","location":{"lat":5,"lon":6}},{"delete":"phone2"}]}"#)
                guard case .error("3", "forbidden", let message, _) = other else { throw TestFailure("expected forbidden, got \(other.encoded)") }
                #expect(message.hasPrefix("write 1: "))
                let bad = try await send(#"{"type":"write","id":"4","dataset":"userLocations","writes":[{"client":"phone1"}]}"#)
                guard case .error("4", "schema_violation", _, _) = bad else { throw TestFailure("expected schema_violation, got \(bad.encoded)") }
                let unknown = try await send(#"{"type":"write","id":"5","dataset":"nope","writes":[{"delete":"phone1"}]}"#)
                guard case .error("5", "unknown_dataset", _, _) = unknown else { throw TestFailure("expected unknown_dataset, got \(unknown.encoded)") }
                let empty = try await send(#"{"type":"write","id":"6","dataset":"userLocations","writes":[]}"#)
                guard case .error("6", "bad_request", _, _) = empty else { throw TestFailure("expected bad_request, got \(empty.encoded)") }
            }
            let page = try await HTTPCall.call(.GET, broker.httpURL + "/v1/datasets/userLocations/records")
            #expect(page["version"] == 2)
            #expect(page["records"] == [["client": "phone1", "location": ["lat": 3.0, "lon": 4.0]]])
        }
    }
}

extension String {
    fileprivate var addingPercentEncodingForQuery: String {
        var out = ""
        for byte in utf8 {
            let c = Character(Unicode.Scalar(byte))
            if c.isLetter && byte < 128 || c.isNumber && byte < 128 || "-_.~".contains(c) { out.append(c) } else { out += String(format: "%%%02X", byte) }
        }
        return out
    }
}
