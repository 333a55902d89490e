/// The JSON bodies of the broker's HTTP API (docs/protocol.md, "HTTP API"), each with one
/// encoder (what the broker sends) and one decoder (what the CLI and the client library read).
/// Decoding is tolerant of unknown extra fields; a reply that is not the body it should be is
/// `bad_json` (what answered may not be a Tocsin broker).

/// A stream as `GET /v1/streams/{name}` (and the list, and `PUT`) describe it.
public struct StreamDescription: Sendable, Hashable {
    public var definition: StreamDefinition
    /// Changes when the stream is recreated.
    public var epoch: String
    /// The newest event's seq (0 when none was appended in this epoch).
    public var lastSeq: Int64
    /// The oldest retained event's seq (`lastSeq + 1` when none is retained).
    public var firstSeq: Int64
    public var createdAtMillis: Int64

    public var name: String { definition.name }

    public init(definition: StreamDefinition, epoch: String, lastSeq: Int64, firstSeq: Int64, createdAtMillis: Int64) {
        self.definition = definition
        self.epoch = epoch
        self.lastSeq = lastSeq
        self.firstSeq = firstSeq
        self.createdAtMillis = createdAtMillis
    }

    /// `retention` holds only the bounds that are set, and `whenFull` only when it is `dropOldest`.
    public var json: JSONValue {
        let r = definition.retention
        var retention: [String: JSONValue] = [:]
        if let a = r.maxAgeSeconds { retention["maxAgeSeconds"] = .int(a) }
        if let e = r.maxEvents { retention["maxEvents"] = .int(e) }
        if r.whenFull != .refuse { retention["whenFull"] = .string(r.whenFull.rawValue) }
        return .object([
            "name": .string(name),
            "fields": .array(
                definition.schema.fields.map { f in
                    .object(["name": .string(f.name), "type": .string(f.type.rawValue), "optional": .bool(f.optional)])
                }),
            "retention": .object(retention),
            "epoch": .string(epoch),
            "lastSeq": .int(lastSeq),
            "firstSeq": .int(firstSeq),
            "createdAt": .string(TimeFormat.format(createdAtMillis)),
        ])
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "stream", code: .badJSON)
        let name = try fields.string("name")
        var body: [String: JSONValue] = ["fields": try fields.optional("fields") ?? .null]
        if let retention = try fields.optional("retention") { body["retention"] = retention }
        do {
            definition = try StreamDefinition(name: name, json: .object(body))
        } catch {
            throw TocsinError(.badJSON, "stream: \(error.message)")
        }
        epoch = try fields.string("epoch")
        lastSeq = try fields.int("lastSeq")
        firstSeq = try fields.int("firstSeq")
        let createdAt = try fields.string("createdAt")
        guard let millis = TimeFormat.parse(createdAt) else {
            throw TocsinError(.badJSON, "stream: 'createdAt' is not a time: \(createdAt)")
        }
        createdAtMillis = millis
    }
}

/// `GET /v1/streams`: every stream, sorted by name.
public struct StreamList: Sendable, Hashable {
    public var streams: [StreamDescription]

    public init(streams: [StreamDescription]) {
        self.streams = streams
    }

    public var json: JSONValue { .object(["streams": .array(streams.map(\.json))]) }

    public init(json: JSONValue) throws(TocsinError) {
        streams = try Fields(json, what: "stream list", code: .badJSON).list("streams") { s throws(TocsinError) in
            try StreamDescription(json: s)
        }
    }
}

/// `GET /v1/streams/{name}/events`: a page of stored events.
public struct EventsPage: Sendable, Hashable {
    public typealias Event = StoredEvent

    public var stream: String
    public var epoch: String
    public var lastSeq: Int64
    public var firstSeq: Int64
    public var events: [Event]

    public init(stream: String, epoch: String, lastSeq: Int64, firstSeq: Int64, events: [Event]) {
        self.stream = stream
        self.epoch = epoch
        self.lastSeq = lastSeq
        self.firstSeq = firstSeq
        self.events = events
    }

    /// The body's text, keys in the order docs/protocol.md shows and each event's stored text
    /// as is (like `ServerMessage.encoded`): a page may hold 10,000 events.
    public var encoded: String {
        var out = "{\"stream\":"
        JSONWriter.writeString(stream, into: &out)
        out += ",\"epoch\":"
        JSONWriter.writeString(epoch, into: &out)
        out += ",\"lastSeq\":\(lastSeq),\"firstSeq\":\(firstSeq),\"events\":["
        for (i, e) in events.enumerated() {
            if i > 0 { out += "," }
            out += "{\"seq\":\(e.seq),\"publishedAt\":"
            JSONWriter.writeString(TimeFormat.format(e.publishedAtMillis), into: &out)
            out += ",\"event\":\(e.json)}"
        }
        out += "]}"
        return out
    }

    /// Reads a page; each event's text comes back serialized (keys sorted).
    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "events page", code: .badJSON)
        stream = try fields.string("stream")
        epoch = try fields.string("epoch")
        lastSeq = try fields.int("lastSeq")
        firstSeq = try fields.int("firstSeq")
        events = try fields.list("events") { e throws(TocsinError) in
            let event = try Fields(e, what: "event", code: .badJSON)
            let publishedAt = try event.string("publishedAt")
            guard let millis = TimeFormat.parse(publishedAt) else {
                throw TocsinError(.badJSON, "event: 'publishedAt' is not a time: \(publishedAt)")
            }
            guard let body = try event.optional("event") else { throw TocsinError(.badJSON, "event: 'event' is missing") }
            return Event(seq: try event.int("seq"), publishedAtMillis: millis, json: body.serialized)
        }
    }
}

/// The answer to `POST /v1/streams/{name}/events`.
public struct PublishReply: Sendable, Hashable {
    public var stream: String
    public var epoch: String
    /// The events' seqs, in the order given.
    public var seqs: [Int64]
    /// For an object body (one event): its seq, the last of `seqs`. Absent for an array body.
    public var seq: Int64?
    /// The publish's key had been stored already: nothing was stored again.
    public var duplicate: Bool

    public init(stream: String, epoch: String, seqs: [Int64], seq: Int64? = nil, duplicate: Bool = false) {
        self.stream = stream
        self.epoch = epoch
        self.seqs = seqs
        self.seq = seq
        self.duplicate = duplicate
    }

    /// `duplicate` appears only when true.
    public var json: JSONValue {
        var o: [String: JSONValue] = ["stream": .string(stream), "epoch": .string(epoch), "seqs": .array(seqs.map { .int($0) })]
        if let seq { o["seq"] = .int(seq) }
        if duplicate { o["duplicate"] = true }
        return .object(o)
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "publish reply", code: .badJSON)
        stream = try fields.string("stream")
        epoch = try fields.string("epoch")
        seqs = try fields.list("seqs") { s throws(TocsinError) in
            guard let seq = s.intValue else { throw TocsinError(.badJSON, "publish reply: 'seqs' must hold integers") }
            return seq
        }
        seq = try fields.optional("seq") == nil ? nil : try fields.int("seq")
        duplicate = try fields.optional("duplicate")?.boolValue ?? false
    }
}

/// A channel as `GET /v1/channels/{name}` (and the list, and `PUT`) describe it: its definition
/// plus `index`, how the matcher indexes it (`hash(…)`, `geo(…)`, `sorted(…)` or `scan`).
public struct ChannelDescription: Sendable, Hashable {
    public var definition: ChannelDefinition
    public var index: String

    public var name: String { definition.name }

    public init(definition: ChannelDefinition, index: String) {
        self.definition = definition
        self.index = index
    }

    public var json: JSONValue {
        guard case .object(var o) = definition.json else { return .null }
        o["index"] = .string(index)
        return .object(o)
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "channel", code: .badJSON)
        index = try fields.string("index")
        var body = fields.object
        body["index"] = nil
        do {
            definition = try ChannelDefinition(name: try fields.string("name"), json: .object(body))
        } catch {
            throw TocsinError(.badJSON, "channel: \(error.message)")
        }
    }
}

/// `GET /v1/channels`: every channel, sorted by name.
public struct ChannelList: Sendable, Hashable {
    public var channels: [ChannelDescription]

    public init(channels: [ChannelDescription]) {
        self.channels = channels
    }

    public var json: JSONValue { .object(["channels": .array(channels.map(\.json))]) }

    public init(json: JSONValue) throws(TocsinError) {
        channels = try Fields(json, what: "channel list", code: .badJSON).list("channels") { c throws(TocsinError) in
            try ChannelDescription(json: c)
        }
    }
}

extension Fields {
    /// The array under `key`, each element decoded.
    func list<T>(_ key: String, _ decode: (JSONValue) throws(TocsinError) -> T) throws(TocsinError) -> [T] {
        guard let list = try optional(key)?.arrayValue else { throw TocsinError(code, "\(what): '\(key)' must be an array") }
        var decoded: [T] = []
        decoded.reserveCapacity(list.count)
        for element in list { decoded.append(try decode(element)) }
        return decoded
    }
}
