/// A durable subscription as the server reports it in `welcome` and `subscribed`.
public struct SubscriptionInfo: Sendable, Hashable {
    public var subscription: String
    public var channel: String
    public var params: [String: JSONValue]
    public var stream: String
    /// The position delivery continues from: events after `seq` in `epoch`.
    public var position: StreamPosition
    /// False when the requested position no longer exists (retention, stream recreated):
    /// delivery then starts from the oldest retained event of the current epoch.
    public var recovered: Bool

    public init(subscription: String, channel: String, params: [String: JSONValue], stream: String, position: StreamPosition, recovered: Bool) {
        self.subscription = subscription
        self.channel = channel
        self.params = params
        self.stream = stream
        self.position = position
        self.recovered = recovered
    }

    var fields: [String: JSONValue] {
        [
            "subscription": .string(subscription), "channel": .string(channel), "params": .object(params),
            "stream": .string(stream), "epoch": .string(position.epoch), "seq": .int(position.seq),
            "recovered": .bool(recovered),
        ]
    }

    init?(_ o: [String: JSONValue]) {
        guard let sub = o["subscription"]?.stringValue, let channel = o["channel"]?.stringValue,
            let epoch = o["epoch"]?.stringValue, let seq = o["seq"]?.intValue
        else { return nil }
        self.init(
            subscription: sub, channel: channel, params: o["params"]?.objectValue ?? [:],
            stream: o["stream"]?.stringValue ?? "", position: StreamPosition(epoch: epoch, seq: seq),
            recovered: o["recovered"] == .bool(true) || o["recovered"] == nil)
    }
}

/// One stored event as sent to clients: its seq and its canonical JSON.
public struct EventPayload: Sendable, Hashable {
    public var seq: Int64
    /// The event's JSON object text, as stored.
    public var json: String
    /// For a channel with `enrich` clauses: the JSON object text of what they attached,
    /// `{"<as>": {"version": v, "records": [...]}, ...}`.
    public var enriched: String?

    public init(seq: Int64, json: String, enriched: String? = nil) {
        self.seq = seq
        self.json = json
        self.enriched = enriched
    }
}

/// A frame the server sends over the WebSocket (docs/protocol.md).
public enum ServerMessage: Sendable, Hashable {
    public enum Notification: Sendable, Hashable {
        /// Push, continuous: the one event.
        case event(String)
        /// Push, continuous, on a channel with `enrich` clauses: the event and what they
        /// attached (`EventPayload.enriched`).
        case enrichedEvent(String, enriched: String)
        /// Push, repetitive: every matching event of the period, in seq order.
        case events([EventPayload])
        /// Notify delivery: how many events matched, up to and including `seq`; fetch them.
        case count(Int)
    }

    case welcome(id: String?, session: String, broker: String, client: String, subscriptions: [SubscriptionInfo])
    case subscribed(id: String?, SubscriptionInfo)
    /// Without `id`: the subscription stopped on this connection without a request; `reason`
    /// says why when it still exists (another connection of the client took it over).
    case unsubscribed(id: String?, subscription: String, reason: UnsubscribedReason? = nil)
    /// `duplicate`: the publish's key had been stored already, so nothing was stored; `seqs` are the first publish's.
    case published(id: String?, stream: String, epoch: String, seqs: [Int64], duplicate: Bool = false)
    case notify(subscription: String, seq: Int64, Notification)
    case fetched(id: String?, subscription: String, events: [EventPayload], seq: Int64)
    case pong(id: String?)
    /// `retryAfterMs`: with `rate_limited`, how long to wait before trying again.
    case error(id: String?, code: String, message: String, retryAfterMs: Int64? = nil)
    /// A `refresh` was accepted: the connection's token is now the fresh one, valid until `expiresAt`.
    case refreshed(id: String?, expiresAtMillis: Int64)
    /// A `write` was stored: the dataset's version after it, and how many writes it held.
    case written(id: String?, dataset: String, version: Int64, written: Int)
    /// The connection's token expires at `expiresAt` (wall-clock milliseconds): send a `refresh`
    /// before then, or the broker closes the connection (close code 4401).
    case tokenExpiring(expiresAtMillis: Int64)
    /// Move to another broker: connect to `to` (a WebSocket URL), say hello and resume every
    /// subscription there, then close this connection. `reason` is `rebalance` or `drain`.
    case migrate(to: String, broker: String, reason: String)

    /// Why a subscription that still exists stopped on this connection (`unsubscribed`'s `reason`).
    public enum UnsubscribedReason: String, Sendable, Hashable {
        /// Another connection said hello (or subscribed) with the same client id and now delivers it.
        case takenOver = "taken_over"
    }

    public static func error(id: String?, _ error: TocsinError) -> ServerMessage {
        .error(id: id, code: error.code.rawValue, message: error.message, retryAfterMs: error.retryAfterMillis)
    }
}

extension ServerMessage {
    /// The frame's text. Keys: `type` first, then `id`, then the rest.
    public var encoded: String {
        var out = "{\"type\":"
        func field(_ key: String, _ value: JSONValue) {
            out += ",\""
            out += key
            out += "\":"
            JSONWriter.write(value, into: &out)
        }
        func id(_ id: String?) {
            if let id { field("id", .string(id)) }
        }
        switch self {
        case .welcome(let i, let session, let broker, let client, let subs):
            out += "\"welcome\""
            id(i)
            field("session", .string(session))
            field("broker", .string(broker))
            field("client", .string(client))
            field("subscriptions", .array(subs.map { .object($0.fields) }))
        case .subscribed(let i, let info):
            out += "\"subscribed\""
            id(i)
            for key in info.fields.keys.sorted() { field(key, info.fields[key]!) }
        case .unsubscribed(let i, let sub, let reason):
            out += "\"unsubscribed\""
            id(i)
            field("subscription", .string(sub))
            if let reason { field("reason", .string(reason.rawValue)) }
        case .published(let i, let stream, let epoch, let seqs, let duplicate):
            out += "\"published\""
            id(i)
            field("stream", .string(stream))
            field("epoch", .string(epoch))
            field("seq", .int(seqs.last ?? 0))
            field("seqs", .array(seqs.map { .int($0) }))
            if duplicate { field("duplicate", .bool(true)) }
        case .notify(let sub, let seq, let n):
            return NotifyFrame.prefix(subscription: sub) + NotifyFrame.suffix(seq: seq, n)
        case .fetched(let i, let sub, let events, let seq):
            out += "\"fetched\""
            id(i)
            field("subscription", .string(sub))
            field("seq", .int(seq))
            out += ",\"events\":"
            NotifyFrame.writeEvents(events, into: &out)
        case .pong(let i):
            out += "\"pong\""
            id(i)
        case .error(let i, let code, let message, let retryAfter):
            out += "\"error\""
            id(i)
            field("code", .string(code))
            field("message", .string(message))
            if let retryAfter { field("retryAfterMs", .int(retryAfter)) }
        case .refreshed(let i, let expiresAt):
            out += "\"refreshed\""
            id(i)
            field("expiresAt", .int(expiresAt))
        case .written(let i, let dataset, let version, let written):
            out += "\"written\""
            id(i)
            field("dataset", .string(dataset))
            field("version", .int(version))
            field("written", .int(Int64(written)))
        case .tokenExpiring(let expiresAt):
            out += "\"token_expiring\""
            field("expiresAt", .int(expiresAt))
        case .migrate(let to, let broker, let reason):
            out += "\"migrate\""
            field("to", .string(to))
            field("broker", .string(broker))
            field("reason", .string(reason))
        }
        out += "}"
        return out
    }
}

/// The `notify` frame, split so the hot path builds the per-subscription prefix once per
/// subscription and the per-event suffix once per event: frame = prefix + suffix.
public enum NotifyFrame {
    public static func prefix(subscription: String) -> String {
        var out = "{\"type\":\"notify\",\"subscription\":"
        JSONWriter.writeString(subscription, into: &out)
        return out
    }

    public static func suffix(seq: Int64, _ n: ServerMessage.Notification) -> String {
        var out = ",\"seq\":"
        out += String(seq)
        switch n {
        case .event(let json):
            out += ",\"event\":"
            out += json
        case .enrichedEvent(let json, let enriched):
            // Before the event, so the client's fast path (`decode`) takes only plain events.
            out += ",\"enriched\":"
            out += enriched
            out += ",\"event\":"
            out += json
        case .events(let events):
            out += ",\"events\":"
            writeEvents(events, into: &out)
        case .count(let c):
            out += ",\"count\":"
            out += String(c)
        }
        out += "}"
        return out
    }

    /// Fast path for the exact `notify` frames this server writes (push and count): no JSON
    /// parse, and the event's JSON is kept byte for byte. Anything else returns nil.
    static func decode(_ bytes: [UInt8]) -> ServerMessage? {
        let head = Array(#"{"type":"notify","subscription":""#.utf8)
        guard bytes.count > head.count + 10, bytes.starts(with: head), bytes.last == UInt8(ascii: "}") else { return nil }
        var i = head.count
        let subStart = i
        while i < bytes.count, bytes[i] != UInt8(ascii: "\""), bytes[i] != UInt8(ascii: "\\") { i += 1 }
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
        let subscription = String(decoding: bytes[subStart..<i], as: UTF8.self)
        let seqKey = Array(#"","seq":"#.utf8)
        guard bytes[i...].starts(with: seqKey) else { return nil }
        i += seqKey.count
        var seq: Int64 = 0
        let digitsStart = i
        while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9"), i - digitsStart < 18 {
            seq = seq * 10 + Int64(bytes[i] - UInt8(ascii: "0"))
            i += 1
        }
        guard i > digitsStart else { return nil }
        let eventKey = Array(#","event":"#.utf8)
        let countKey = Array(#","count":"#.utf8)
        if bytes[i...].starts(with: eventKey) {
            let json = String(decoding: bytes[(i + eventKey.count)..<(bytes.count - 1)], as: UTF8.self)
            return .notify(subscription: subscription, seq: seq, .event(json))
        }
        if bytes[i...].starts(with: countKey), let count = Int(String(decoding: bytes[(i + countKey.count)..<(bytes.count - 1)], as: UTF8.self)) {
            return .notify(subscription: subscription, seq: seq, .count(count))
        }
        return nil
    }

    static func writeEvents(_ events: [EventPayload], into out: inout String) {
        out += "["
        for (i, e) in events.enumerated() {
            if i > 0 { out += "," }
            out += "{\"seq\":"
            out += String(e.seq)
            out += ",\"event\":"
            out += e.json
            if let enriched = e.enriched {
                out += ",\"enriched\":"
                out += enriched
            }
            out += "}"
        }
        out += "]"
    }
}

extension ServerMessage {
    /// Decodes a server frame (used by the client library).
    public static func decode(_ bytes: some Collection<UInt8>) throws(TocsinError) -> ServerMessage {
        if let fast = NotifyFrame.decode(Array(bytes)) { return fast }
        let json = try JSONValue.parse(bytes)
        guard case .object(let o) = json, let type = o["type"]?.stringValue else {
            throw TocsinError(.badRequest, "server frame without a type")
        }
        let id = o["id"]?.stringValue
        func events(_ v: JSONValue?) -> [EventPayload] {
            (v?.arrayValue ?? []).compactMap { e in
                guard let seq = e["seq"]?.intValue, let ev = e["event"] else { return nil }
                return EventPayload(seq: seq, json: ev.serialized, enriched: e["enriched"]?.serialized)
            }
        }
        let bad = TocsinError(.badRequest, "malformed '\(type)' frame")
        switch type {
        case "welcome":
            return .welcome(
                id: id, session: o["session"]?.stringValue ?? "", broker: o["broker"]?.stringValue ?? "",
                client: o["client"]?.stringValue ?? "",
                subscriptions: (o["subscriptions"]?.arrayValue ?? []).compactMap { $0.objectValue.flatMap(SubscriptionInfo.init) })
        case "subscribed":
            guard let info = SubscriptionInfo(o) else { throw bad }
            return .subscribed(id: id, info)
        case "unsubscribed":
            return .unsubscribed(
                id: id, subscription: o["subscription"]?.stringValue ?? "",
                reason: o["reason"]?.stringValue.flatMap(UnsubscribedReason.init(rawValue:)))
        case "published":
            return .published(
                id: id, stream: o["stream"]?.stringValue ?? "", epoch: o["epoch"]?.stringValue ?? "",
                seqs: (o["seqs"]?.arrayValue ?? []).compactMap(\.intValue), duplicate: o["duplicate"]?.boolValue ?? false)
        case "notify":
            guard let sub = o["subscription"]?.stringValue, let seq = o["seq"]?.intValue else { throw bad }
            if let e = o["event"] {
                if let enriched = o["enriched"] { return .notify(subscription: sub, seq: seq, .enrichedEvent(e.serialized, enriched: enriched.serialized)) }
                return .notify(subscription: sub, seq: seq, .event(e.serialized))
            }
            if let c = o["count"]?.intValue { return .notify(subscription: sub, seq: seq, .count(Int(c))) }
            return .notify(subscription: sub, seq: seq, .events(events(o["events"])))
        case "fetched":
            return .fetched(id: id, subscription: o["subscription"]?.stringValue ?? "", events: events(o["events"]), seq: o["seq"]?.intValue ?? 0)
        case "pong":
            return .pong(id: id)
        case "error":
            return .error(
                id: id, code: o["code"]?.stringValue ?? "", message: o["message"]?.stringValue ?? "", retryAfterMs: o["retryAfterMs"]?.intValue)
        case "refreshed":
            return .refreshed(id: id, expiresAtMillis: o["expiresAt"]?.intValue ?? 0)
        case "written":
            return .written(
                id: id, dataset: o["dataset"]?.stringValue ?? "", version: o["version"]?.intValue ?? 0,
                written: Int(clamping: o["written"]?.intValue ?? 0))
        case "token_expiring":
            return .tokenExpiring(expiresAtMillis: o["expiresAt"]?.intValue ?? 0)
        case "migrate":
            guard let to = o["to"]?.stringValue else { throw bad }
            return .migrate(to: to, broker: o["broker"]?.stringValue ?? "", reason: o["reason"]?.stringValue ?? "")
        default:
            throw TocsinError(.unknownMessage, "unknown server message type '\(type)'")
        }
    }
}
