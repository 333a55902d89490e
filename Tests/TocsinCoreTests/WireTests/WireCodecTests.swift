import Foundation
import Testing
@testable import TocsinCore

struct WireCodecTests {
    func decode(_ text: String) -> Result<ClientMessage, WireError> {
        ClientMessage.decode(Array(text.utf8))
    }

    @Test func decodesEveryClientMessage() throws {
        #expect(try decode(#"{"type":"hello","id":"1","client":"alice"}"#).get() == .hello(id: "1", client: "alice"))
        #expect(try decode(#"{"type":"hello"}"#).get() == .hello(id: nil, client: nil))
        #expect(
            try decode(#"{"type":"subscribe","id":7,"channel":"C","params":{"k":1},"from":{"epoch":"e","seq":3}}"#).get()
                == .subscribe(id: "7", channel: "C", params: ["k": 1], from: .position(StreamPosition(epoch: "e", seq: 3))))
        #expect(try decode(#"{"type":"subscribe","channel":"C","from":"earliest"}"#).get() == .subscribe(id: nil, channel: "C", params: [:], from: .earliest))
        #expect(try decode(#"{"type":"unsubscribe","subscription":"s"}"#).get() == .unsubscribe(id: nil, subscription: "s"))
        #expect(try decode(#"{"type":"publish","stream":"x","event":{"a":1}}"#).get() == .publish(id: nil, stream: "x", events: [["a": 1]], batch: false))
        #expect(try decode(#"{"type":"publish","stream":"x","events":[{"a":1},{"a":2}]}"#).get() == .publish(id: nil, stream: "x", events: [["a": 1], ["a": 2]], batch: true))
        #expect(try decode(#"{"type":"ack","subscription":"s","seq":9}"#).get() == .ack(id: nil, subscription: "s", seq: 9))
        #expect(try decode(#"{"type":"fetch","subscription":"s","after":2}"#).get() == .fetch(id: nil, subscription: "s", after: 2, limit: 100))
        #expect(try decode(#"{"type":"ping","id":"p"}"#).get() == .ping(id: "p"))
    }

    @Test(arguments: [
        (#"{"type":"hello""#, "bad_json"),
        (#""hello""#, "bad_request"),
        (#"{"id":"1"}"#, "bad_request"),
        (#"{"type":"nope"}"#, "unknown_message"),
        (#"{"type":"subscribe"}"#, "bad_request"),
        (#"{"type":"subscribe","channel":"C","params":[1]}"#, "bad_request"),
        (#"{"type":"subscribe","channel":"C","from":{"epoch":"e"}}"#, "bad_request"),
        (#"{"type":"publish","stream":"x"}"#, "bad_request"),
        (#"{"type":"publish","stream":"x","events":[]}"#, "bad_request"),
        (#"{"type":"publish","stream":"x","event":{},"events":[{}]}"#, "bad_request"),
        (#"{"type":"ack","subscription":"s","seq":-1}"#, "bad_request"),
        (#"{"type":"ack","subscription":"s","seq":"9"}"#, "bad_request"),
        (#"{"type":"fetch","subscription":"s","after":-5}"#, "bad_request"),
        (#"{"type":"hello","id":{"x":1}}"#, "bad_request"),
        (#"{"type":"hello","client":""}"#, "bad_request"),
        (#"{"type":"hello","client":"a\u0000b"}"#, "bad_request"),
        (#"{"type":"publish","stream":"x","event":{},"key":"a\u0000b"}"#, "bad_request"),
        (#"{"type":"publish","stream":"x","event":{},"traceparent":"00-abc"}"#, "bad_request"),
        (#"{"type":"publish","stream":"x","event":{},"traceparent":7}"#, "bad_request"),
    ])
    func rejectsBadFramesWithAStableCode(frame: String, code: String) {
        guard case .failure(let e) = decode(frame) else {
            Issue.record("accepted \(frame)")
            return
        }
        #expect(e.error.code.rawValue == code, "\(frame): \(e.error)")
        #expect(!e.error.message.isEmpty)
    }

    @Test func errorsEchoTheRequestID() {
        guard case .failure(let e) = decode(#"{"type":"subscribe","id":"42"}"#) else {
            Issue.record("accepted")
            return
        }
        #expect(e.id == "42")
    }

    @Test func clientMessagesRoundTrip() throws {
        let messages: [ClientMessage] = [
            .hello(id: "1", client: "a"),
            .subscribe(id: "2", channel: "C", params: ["lat": 1.5, "kinds": ["a", "b"]], from: .position(StreamPosition(epoch: "e1", seq: 5))),
            .publish(id: "3", stream: "s", events: [["a": 1]], batch: false),
            .publish(id: "4", stream: "s", events: [["a": 1], ["a": 2]], batch: true),
            .publish(id: "6", stream: "s", events: [["a": 1]], batch: false, trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            .ack(id: nil, subscription: "s", seq: 3),
            .fetch(id: "5", subscription: "s", after: 1, limit: 10),
        ]
        for m in messages {
            #expect(try decode(m.encoded).get() == m)
        }
    }

    @Test func serverMessagesRoundTripAndNotifyFramesAreExact() throws {
        let info = SubscriptionInfo(
            subscription: "s1", channel: "C", params: ["k": "v"], stream: "st", position: StreamPosition(epoch: "e", seq: 4), recovered: false)
        let messages: [ServerMessage] = [
            .welcome(id: "1", session: "ws-1", broker: "b", client: "c", subscriptions: [info]),
            .subscribed(id: "2", info),
            .unsubscribed(id: nil, subscription: "s1"),
            .published(id: "3", stream: "st", epoch: "e", seqs: [5, 6]),
            .notify(subscription: "s1", seq: 9, .event(#"{"a":1}"#)),
            .notify(subscription: "s1", seq: 9, .events([EventPayload(seq: 8, json: #"{"a":1}"#), EventPayload(seq: 9, json: #"{"a":2}"#)])),
            .notify(subscription: "s1", seq: 9, .count(2)),
            .fetched(id: "4", subscription: "s1", events: [EventPayload(seq: 8, json: #"{"a":1}"#)], seq: 10),
            .pong(id: "5"),
            .error(id: "6", code: "bad_json", message: "oops \"quoted\""),
        ]
        for m in messages {
            #expect(try ServerMessage.decode(Array(m.encoded.utf8)) == m, "\(m.encoded)")
        }
        #expect(
            ServerMessage.notify(subscription: "s1", seq: 9, .event(#"{"a":1}"#)).encoded
                == #"{"type":"notify","subscription":"s1","seq":9,"event":{"a":1}}"#)
        #expect(
            ServerMessage.notify(subscription: "s1", seq: 9, .count(2)).encoded == #"{"type":"notify","subscription":"s1","seq":9,"count":2}"#)
    }
}

extension WireCodecTests {
    @Test func notifyFastPathKeepsTheEventBytesAndNeverCrashes() throws {
        let frame = ServerMessage.notify(subscription: "s_9", seq: 12, .event(#"{"z":1,"a":{"lat":1.0,"lon":2.0}}"#)).encoded
        #expect(try ServerMessage.decode(Array(frame.utf8)) == .notify(subscription: "s_9", seq: 12, .event(#"{"z":1,"a":{"lat":1.0,"lon":2.0}}"#)))
        // Every truncation or corruption either decodes or throws; none crashes.
        let bytes = Array(frame.utf8)
        for cut in 0..<bytes.count {
            _ = try? ServerMessage.decode(Array(bytes[0..<cut]))
            var corrupted = bytes
            corrupted[cut] = UInt8(ascii: "\\")
            _ = try? ServerMessage.decode(corrupted)
        }
    }
}

struct SchemaTests {
    let schema = try! StreamSchema(fields: [
        FieldSpec(name: "kind", type: .string), FieldSpec(name: "n", type: .int), FieldSpec(name: "x", type: .double),
        FieldSpec(name: "ok", type: .bool), FieldSpec(name: "at", type: .time), FieldSpec(name: "where", type: .geo),
        FieldSpec(name: "tags", type: .stringList), FieldSpec(name: "note", type: .string, optional: true),
    ])

    @Test func validEventsBecomeRecordsAndCanonicalJSON() throws {
        let json = try JSONValue.parse(
            #"{"tags":["a"],"where":{"lon":4.5,"lat":52},"at":"2026-11-23T12:00:00Z","ok":true,"x":2,"n":3,"kind":"k"}"#)
        let record = try schema.record(from: json)
        #expect(record[1] == .int(3))
        #expect(record[2] == .double(2))
        #expect(record[4] == .time(1_795_435_200_000))
        #expect(record[5] == .geo(GeoPoint(lat: 52, lon: 4.5)))
        #expect(record[7] == .null)
        #expect(
            schema.json(of: record)
                == #"{"kind":"k","n":3,"x":2.0,"ok":true,"at":"2026-11-23T12:00:00Z","where":{"lat":52.0,"lon":4.5},"tags":["a"]}"#)
        // Canonical JSON parses back to the same record.
        #expect(try schema.record(from: JSONValue.parse(schema.json(of: record))) == record)
    }

    @Test(arguments: [
        (#"[1]"#, "must be a JSON object"),
        (#"{"kind":"k"}"#, "missing required field 'n'"),
        (#"{"kind":1,"n":3,"x":2,"ok":true,"at":0,"where":{"lat":1,"lon":1},"tags":[]}"#, "field 'kind' must be a string"),
        (#"{"kind":"k","n":3.5,"x":2,"ok":true,"at":0,"where":{"lat":1,"lon":1},"tags":[]}"#, "field 'n' must be an integer"),
        (#"{"kind":"k","n":3,"x":2,"ok":true,"at":"yesterday","where":{"lat":1,"lon":1},"tags":[]}"#, "RFC 3339"),
        (#"{"kind":"k","n":3,"x":2,"ok":true,"at":0,"where":{"lat":91,"lon":1},"tags":[]}"#, "out of range"),
        (#"{"kind":"k","n":3,"x":2,"ok":true,"at":0,"where":[1,2],"tags":[]}"#, "must be a point"),
        (#"{"kind":"k","n":3,"x":2,"ok":true,"at":0,"where":{"lat":1,"lon":1},"tags":[1]}"#, "list of strings"),
        (#"{"kind":"k","n":3,"x":2,"ok":true,"at":0,"where":{"lat":1,"lon":1},"tags":[],"extra":1}"#, "unknown field 'extra'"),
        (#"{"kind":null,"n":3,"x":2,"ok":true,"at":0,"where":{"lat":1,"lon":1},"tags":[]}"#, "required"),
    ])
    func invalidEventsAreRejectedWithAReason(event: String, reason: String) throws {
        #expect {
            try schema.record(from: JSONValue.parse(event))
        } throws: { error in
            guard let e = error as? TocsinError else { return false }
            return e.code == .schemaViolation && e.message.contains(reason)
        }
    }

    @Test func streamDefinitionsAreValidated() {
        #expect(throws: TocsinError.self) { try StreamDefinition(name: "s", json: ["fields": []]) }
        #expect(throws: TocsinError.self) { try StreamDefinition(name: "s", json: ["fields": [["name": "a", "type": "int"], ["name": "a", "type": "int"]]]) }
        #expect(throws: TocsinError.self) { try StreamDefinition(name: "s", json: ["fields": [["name": "1a", "type": "int"]]]) }
        #expect(throws: TocsinError.self) { try StreamDefinition(name: "s", json: ["fields": [["name": "a", "type": "int"]], "retention": ["maxEvents": -1]]) }
        #expect(throws: TocsinError.self) { try StreamDefinition(name: "a b", json: ["fields": [["name": "a", "type": "int"]]]) }
        #expect(throws: Never.self) { try StreamDefinition(name: "ok.name-1", json: ["fields": [["name": "a", "type": "int"]]]) }
    }

    @Test func whenFullIsRefuseUnlessTheStreamAsksToDropItsOldest() throws {
        let fields: JSONValue = [["name": "a", "type": "int"]]
        #expect(try StreamDefinition(name: "s", json: ["fields": fields]).retention.whenFull == .refuse)
        let ring = try StreamDefinition(name: "s", json: ["fields": fields, "retention": ["whenFull": "dropOldest", "maxEvents": 9]])
        #expect(ring.retention == Retention(maxEvents: 9, whenFull: .dropOldest))
        #expect(throws: TocsinError(.invalidStream, "retention.whenFull must be \"refuse\" or \"dropOldest\"")) {
            try StreamDefinition(name: "s", json: ["fields": fields, "retention": ["whenFull": "drop"]])
        }
        #expect(throws: TocsinError(.invalidStream, "retention.whenFull must be \"refuse\" or \"dropOldest\"")) {
            try StreamDefinition(name: "s", json: ["fields": fields, "retention": ["whenFull": 1]])
        }
        // Stored definitions: the default is not written, so those stored before it read the same.
        let plain = String(decoding: try JSONEncoder().encode(try StreamDefinition(name: "s", json: ["fields": fields, "retention": ["maxEvents": 9]])), as: UTF8.self)
        #expect(!plain.contains("whenFull"))
        #expect(try JSONDecoder().decode(StreamDefinition.self, from: Data(plain.utf8)).retention == Retention(maxEvents: 9))
        let encoded = try JSONEncoder().encode(ring)
        #expect(try JSONDecoder().decode(StreamDefinition.self, from: encoded) == ring)
    }

    /// W3C Trace Context's traceparent, as a publish frame and the HTTP header carry it.
    @Test(arguments: [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", true, true),
        // A later version may append fields after a dash.
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true, true),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false, false),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, false),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, false),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false, false),
        ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false, false),
        ("", false, false),
    ])
    func traceparentsAreCheckedAndTheirSampledFlagRead(text: String, valid: Bool, sampled: Bool) {
        #expect(TraceParent.isValid(text) == valid, "\(text)")
        #expect(TraceParent.isSampled(text) == sampled, "\(text)")
        let frame = #"{"type":"publish","stream":"x","event":{},"traceparent":"\#(text)"}"#
        switch ClientMessage.decode(Array(frame.utf8)) {
        case .success(.publish(_, _, _, _, _, let trace)): #expect(valid && trace == text)
        case .success(let other): Issue.record("decoded as \(other)")
        case .failure(let e): #expect(!valid && e.error.code == .badRequest && e.error.message.contains("traceparent"))
        }
    }
}
