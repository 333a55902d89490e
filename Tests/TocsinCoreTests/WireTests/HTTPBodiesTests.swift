import Testing
import TocsinCore

/// The HTTP API's bodies: the broker encodes them, the CLI and the client library decode them.
/// Each encodes to the text docs/protocol.md shows and decodes back to the same value.
struct HTTPBodiesTests {
    static let created = TimeFormat.parse("2026-11-23T11:58:02.417Z")!

    static func stream(retention: Retention = Retention(maxAgeSeconds: 604_800)) throws -> StreamDescription {
        let schema = try StreamSchema(fields: [
            FieldSpec(name: "kind", type: .string, optional: false), FieldSpec(name: "severity", type: .int, optional: false),
            FieldSpec(name: "description", type: .string, optional: true),
        ])
        return StreamDescription(
            definition: StreamDefinition(name: "emergencies", schema: schema, retention: retention), epoch: "mi2k0f3a-1x9q2b", lastSeq: 43,
            firstSeq: 1, createdAtMillis: created)
    }

    static let channel = ChannelDescription(
        definition: ChannelDefinition(
            name: "AreaDigest", stream: "emergencies",
            params: [ChannelParameter(name: "area", type: .string), ChannelParameter(name: "minSeverity", type: .int, default: 1)],
            whereClause: "area == $area && severity >= $minSeverity", mode: .repetitive(periodMillis: 10_000), delivery: .push),
        index: "hash(area == $area)")

    @Test func aStreamIsDescribedAsDocumented() throws {
        let s = try Self.stream()
        #expect(
            s.json.serialized
                == #"{"createdAt":"2026-11-23T11:58:02.417Z","epoch":"mi2k0f3a-1x9q2b","fields":[{"name":"kind","optional":false,"type":"string"},{"name":"severity","optional":false,"type":"int"},{"name":"description","optional":true,"type":"string"}],"firstSeq":1,"lastSeq":43,"name":"emergencies","retention":{"maxAgeSeconds":604800}}"#
        )
        #expect(try StreamDescription(json: s.json) == s)
        // `whenFull` shows only when it is not the default; both bounds when both are set.
        let full = try Self.stream(retention: Retention(maxAgeSeconds: 60, maxEvents: 1000, whenFull: .dropOldest))
        #expect(full.json["retention"] == ["maxAgeSeconds": 60, "maxEvents": 1000, "whenFull": "dropOldest"])
        #expect(try StreamDescription(json: full.json) == full)
        let unbounded = try Self.stream(retention: Retention())
        #expect(unbounded.json["retention"] == .object([:]))
        #expect(try StreamDescription(json: unbounded.json) == unbounded)
        let list = StreamList(streams: [s, full])
        #expect(list.json.serialized == #"{"streams":["# + s.json.serialized + "," + full.json.serialized + "]}")
        #expect(try StreamList(json: list.json) == list)
    }

    @Test func anEventsPageKeepsTheDocumentedKeyOrderAndTheStoredText() throws {
        let page = EventsPage(
            stream: "emergencies", epoch: "mi2k0f3a-1x9q2b", lastSeq: 44, firstSeq: 1,
            events: [
                EventsPage.Event(
                    seq: 43, publishedAtMillis: TimeFormat.parse("2026-11-23T12:00:01.204Z")!, json: #"{"kind":"fire","severity":4}"#),
                EventsPage.Event(
                    seq: 44, publishedAtMillis: TimeFormat.parse("2026-11-23T12:00:03.551Z")!, json: #"{"kind":"flood","severity":2}"#),
            ])
        #expect(
            page.encoded
                == #"{"stream":"emergencies","epoch":"mi2k0f3a-1x9q2b","lastSeq":44,"firstSeq":1,"events":[{"seq":43,"publishedAt":"2026-11-23T12:00:01.204Z","event":{"kind":"fire","severity":4}},{"seq":44,"publishedAt":"2026-11-23T12:00:03.551Z","event":{"kind":"flood","severity":2}}]}"#
        )
        #expect(try EventsPage(json: try JSONValue.parse(page.encoded)) == page)
        let empty = EventsPage(stream: "s", epoch: "e", lastSeq: 0, firstSeq: 1, events: [])
        #expect(empty.encoded == #"{"stream":"s","epoch":"e","lastSeq":0,"firstSeq":1,"events":[]}"#)
        #expect(try EventsPage(json: try JSONValue.parse(empty.encoded)) == empty)
    }

    @Test func aPublishReplyHasSeqOnlyForOneEventAndDuplicateOnlyWhenTrue() throws {
        let one = PublishReply(stream: "emergencies", epoch: "mi2k0f3a-1x9q2b", seqs: [44], seq: 44)
        #expect(one.json.serialized == #"{"epoch":"mi2k0f3a-1x9q2b","seq":44,"seqs":[44],"stream":"emergencies"}"#)
        let batch = PublishReply(stream: "emergencies", epoch: "e", seqs: [45, 46])
        #expect(batch.json.serialized == #"{"epoch":"e","seqs":[45,46],"stream":"emergencies"}"#)
        let repeated = PublishReply(stream: "emergencies", epoch: "e", seqs: [45, 46], duplicate: true)
        #expect(repeated.json.serialized == #"{"duplicate":true,"epoch":"e","seqs":[45,46],"stream":"emergencies"}"#)
        for reply in [one, batch, repeated] { #expect(try PublishReply(json: reply.json) == reply) }
    }

    @Test func aChannelIsItsDefinitionPlusItsIndex() throws {
        let c = Self.channel
        #expect(
            c.json.serialized
                == #"{"delivery":"push","index":"hash(area == $area)","mode":"repetitive","name":"AreaDigest","params":[{"name":"area","type":"string"},{"default":1,"name":"minSeverity","type":"int"}],"period":"10s","stream":"emergencies","where":"area == $area && severity >= $minSeverity"}"#
        )
        #expect(try ChannelDescription(json: c.json) == c)
        let list = ChannelList(channels: [c])
        #expect(try ChannelList(json: list.json) == list)
    }

    @Test(arguments: [
        #"[]"#, #"{"streams":{}}"#, #"{"name":"x"}"#, #"{"stream":"s","epoch":"e","lastSeq":1,"firstSeq":1}"#,
        #"{"stream":"s","epoch":"e","seqs":["1"]}"#, #"{"name":"C","stream":"s","where":"true"}"#,
    ])
    func aBodyThatIsNotWhatTheBrokerSendsIsBadJSON(_ text: String) throws {
        let json = try JSONValue.parse(text)
        #expect(Self.code { try StreamDescription(json: json) } == .badJSON)
        #expect(Self.code { try StreamList(json: json) } == .badJSON)
        #expect(Self.code { try EventsPage(json: json) } == .badJSON)
        #expect(Self.code { try PublishReply(json: json) } == .badJSON)
        #expect(Self.code { try ChannelDescription(json: json) } == .badJSON)
        #expect(Self.code { try ChannelList(json: json) } == .badJSON)
    }

    /// The code of the error `decode` throws; nil if it decodes.
    static func code<T>(_ decode: () throws -> T) -> TocsinError.Code? {
        do {
            _ = try decode()
            return nil
        } catch {
            return (error as? TocsinError)?.code
        }
    }
}
