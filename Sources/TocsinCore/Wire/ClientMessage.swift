/// A frame a client sends over the WebSocket (docs/protocol.md). Every request may carry an
/// `id` that the reply (or `error`) echoes.
public enum ClientMessage: Sendable, Hashable {
    /// `token`: the client's access token, when the broker requires one and the upgrade did not carry it.
    case hello(id: String?, client: String?, token: String? = nil)
    case subscribe(id: String?, channel: String, params: [String: JSONValue], from: StartPosition)
    case unsubscribe(id: String?, subscription: String)
    /// `key`: the publisher's idempotency key (see `PublishKey`), if it gave one. `trace`: its
    /// W3C `traceparent` (see `TraceParent`), if it traces the publish.
    case publish(id: String?, stream: String, events: [JSONValue], batch: Bool, key: String? = nil, trace: String? = nil)
    case ack(id: String?, subscription: String, seq: Int64)
    case fetch(id: String?, subscription: String, after: Int64, limit: Int)
    case ping(id: String?)
    /// A fresh token for the same client, before the connection's token expires.
    case refresh(id: String?, token: String)
    /// Upserts and deletes (`{"delete": key}`) of the client's own records of a dataset: every
    /// key must be the client's id.
    case write(id: String?, dataset: String, writes: [JSONValue])

    public var id: String? {
        switch self {
        case .hello(let id, _, _), .subscribe(let id, _, _, _), .unsubscribe(let id, _), .publish(let id, _, _, _, _, _),
            .ack(let id, _, _), .fetch(let id, _, _, _), .ping(let id), .refresh(let id, _), .write(let id, _, _):
            id
        }
    }

    /// The message's type without its fields (the `type` of its frame).
    public enum Kind: String, Sendable, CaseIterable {
        case hello, subscribe, unsubscribe, publish, ack, fetch, ping, refresh, write
    }

    public var kind: Kind {
        switch self {
        case .hello: .hello
        case .subscribe: .subscribe
        case .unsubscribe: .unsubscribe
        case .publish: .publish
        case .ack: .ack
        case .fetch: .fetch
        case .ping: .ping
        case .refresh: .refresh
        case .write: .write
        }
    }
}

extension ClientMessage {
    /// Decodes one text frame. Errors carry the request `id` when it could be read.
    public static func decode(_ bytes: some Collection<UInt8>) -> Result<ClientMessage, WireError> {
        let json: JSONValue
        do {
            json = try JSONValue.parse(bytes)
        } catch {
            return .failure(WireError(id: nil, error: error))
        }
        return decode(json)
    }

    public static func decode(_ json: JSONValue) -> Result<ClientMessage, WireError> {
        guard case .object(let o) = json else {
            return .failure(WireError(id: nil, error: TocsinError(.badRequest, "a frame must be a JSON object")))
        }
        var id: String? = nil
        switch o["id"] {
        case nil, .null?: break
        case .string(let s)?: id = s
        case .int(let i)?: id = String(i)
        // An integer written with a fraction of zero (`3.0`) is that integer, echoed as "3".
        case .double(let d)? where d.rounded() == d && abs(d) < 9.0e15: id = String(Int64(d))
        default:
            return .failure(WireError(id: nil, error: TocsinError(.badRequest, "'id' must be a string or an integer")))
        }
        do {
            return .success(try decodeBody(o, id: id))
        } catch {
            return .failure(WireError(id: id, error: error))
        }
    }

    private static func decodeBody(_ frame: [String: JSONValue], id: String?) throws(TocsinError) -> ClientMessage {
        // A field given as `null` is absent (an optional one takes its default, a required one is
        // missing). Copied only when there is one: publishes are decoded tens of thousands a second.
        let o = frame.values.contains(.null) ? frame.filter { $0.value != .null } : frame
        guard let type = o["type"]?.stringValue else {
            throw TocsinError(.badRequest, "a frame needs a string 'type'")
        }
        func string(_ key: String) throws(TocsinError) -> String {
            guard let s = o[key]?.stringValue, !s.isEmpty else {
                throw TocsinError(.badRequest, "'\(type)' needs a non-empty string '\(key)'")
            }
            return s
        }
        func int(_ key: String) throws(TocsinError) -> Int64 {
            guard let v = o[key]?.intValue else {
                throw TocsinError(.badRequest, "'\(type)' needs an integer '\(key)'")
            }
            return v
        }
        switch type {
        case "hello":
            let token = try self.token(o["token"], required: false)
            switch o["client"] {
            case nil, .null?: return .hello(id: id, client: nil, token: token)
            case .string(let s)? where !s.isEmpty && s.utf8.count <= 256 && !s.utf8.contains(0): return .hello(id: id, client: s, token: token)
            default: throw TocsinError(.badRequest, "'client' must be a non-empty string of at most 256 bytes, without the character U+0000")
            }
        case "refresh":
            return .refresh(id: id, token: try self.token(o["token"], required: true) ?? "")
        case "subscribe":
            let channel = try string("channel")
            var params: [String: JSONValue] = [:]
            switch o["params"] {
            case nil, .null?: break
            case .object(let p)?: params = p
            default: throw TocsinError(.badRequest, "'params' must be an object")
            }
            var from = try startPosition(o["from"])
            if let history = o["history"], history != .null {
                guard o["from"] == nil || o["from"] == .null else {
                    throw TocsinError(.badRequest, "give 'from' or 'history', not both")
                }
                guard let text = history.stringValue, let ms = Duration.parseMillis(text), ms > 0, ms <= StartPosition.maxHistoryMillis else {
                    throw TocsinError(.badRequest, "'history' must be a duration such as \"30m\", \"24h\" or \"7d\", more than 0 and at most 36500d")
                }
                from = .history(millis: ms)
            }
            return .subscribe(id: id, channel: channel, params: params, from: from)
        case "unsubscribe":
            return .unsubscribe(id: id, subscription: try string("subscription"))
        case "publish":
            let stream = try string("stream")
            let key: String?
            switch o["key"] {
            case nil, .null?: key = nil
            case .string(let k)?: key = try PublishKey.validated(k)
            default: throw TocsinError(.badRequest, "'key' must be a string")
            }
            let trace: String?
            switch o["traceparent"] {
            case nil, .null?: trace = nil
            case .string(let t)?: trace = try TraceParent.validated(t)
            default: throw TocsinError(.badRequest, "'traceparent' must be a string")
            }
            if let event = o["event"] {
                if o["events"] != nil { throw TocsinError(.badRequest, "'publish' takes 'event' or 'events', not both") }
                return .publish(id: id, stream: stream, events: [event], batch: false, key: key, trace: trace)
            }
            guard case .array(let events)? = o["events"], !events.isEmpty else {
                throw TocsinError(.badRequest, "'publish' needs an 'event' object or a non-empty 'events' array")
            }
            return .publish(id: id, stream: stream, events: events, batch: true, key: key, trace: trace)
        case "ack":
            let seq = try int("seq")
            guard seq >= 0 else { throw TocsinError(.badRequest, "'seq' must not be negative") }
            return .ack(id: id, subscription: try string("subscription"), seq: seq)
        case "fetch":
            let after = o["after"] == nil ? 0 : try int("after")
            let limit = o["limit"] == nil ? 100 : try int("limit")
            guard after >= 0 else { throw TocsinError(.badRequest, "'after' must not be negative") }
            guard limit > 0 else { throw TocsinError(.badRequest, "'limit' must be positive") }
            return .fetch(id: id, subscription: try string("subscription"), after: after, limit: Int(min(limit, 10_000)))
        case "ping":
            return .ping(id: id)
        case "write":
            let dataset = try string("dataset")
            guard case .array(let writes)? = o["writes"], !writes.isEmpty else {
                throw TocsinError(.badRequest, "'write' needs a non-empty 'writes' array of records and {\"delete\": key}")
            }
            return .write(id: id, dataset: dataset, writes: writes)
        default:
            throw TocsinError(
                .unknownMessage, "unknown message type '\(type)' (expected hello, subscribe, unsubscribe, publish, ack, fetch, ping, refresh, write)")
        }
    }

    /// A token field: a non-empty string of at most `maxTokenBytes`.
    static func token(_ json: JSONValue?, required: Bool) throws(TocsinError) -> String? {
        switch json {
        case nil where !required, .null? where !required: return nil
        case .string(let s)? where !s.isEmpty && s.utf8.count <= maxTokenBytes: return s
        default: throw TocsinError(.badRequest, "'token' must be a non-empty string of at most \(maxTokenBytes) bytes")
        }
    }

    /// The longest token a broker reads (a JWT with a long scope list fits well within it).
    public static let maxTokenBytes = 8192

    static let fromRule = "'from' must be \"latest\", \"earliest\", {\"epoch\": string, \"seq\": integer >= 0} or {\"since\": time}"

    static func startPosition(_ json: JSONValue?) throws(TocsinError) -> StartPosition {
        switch json {
        case nil, .null?, .string("latest")?: return .latest
        case .string("earliest")?: return .earliest
        case .object(let p)? where p.count == 1 && p["since"] != nil:
            switch p["since"] {
            case .string(let text)?:
                guard let ms = TimeFormat.parse(text) else {
                    throw TocsinError(.badRequest, "'from.since' must be an RFC 3339 time such as \"2026-12-06T00:00:00Z\" or integer milliseconds")
                }
                return .since(millis: ms)
            case .int(let ms)? where TimeFormat.supportedRange.contains(ms):
                return .since(millis: ms)
            default:
                throw TocsinError(.badRequest, "'from.since' must be an RFC 3339 time such as \"2026-12-06T00:00:00Z\" or integer milliseconds (years 1 to 9999)")
            }
        case .object(let p)?:
            guard let epoch = p["epoch"]?.stringValue, let seq = p["seq"]?.intValue, seq >= 0 else {
                throw TocsinError(.badRequest, Self.fromRule)
            }
            return .position(StreamPosition(epoch: epoch, seq: seq))
        default:
            throw TocsinError(.badRequest, Self.fromRule)
        }
    }

    /// The frame as a client library sends it.
    public var encoded: String {
        var o: [String: JSONValue] = [:]
        if let id { o["id"] = .string(id) }
        switch self {
        case .hello(_, let client, let token):
            o["type"] = "hello"
            if let client { o["client"] = .string(client) }
            if let token { o["token"] = .string(token) }
        case .subscribe(_, let channel, let params, let from):
            o["type"] = "subscribe"
            o["channel"] = .string(channel)
            o["params"] = .object(params)
            switch from {
            case .latest: o["from"] = "latest"
            case .earliest: o["from"] = "earliest"
            case .position(let p): o["from"] = .object(["epoch": .string(p.epoch), "seq": .int(p.seq)])
            case .since(let ms): o["from"] = .object(["since": .string(TimeFormat.format(ms))])
            case .history(let ms): o["history"] = .string(Duration.format(millis: ms))
            }
        case .unsubscribe(_, let subscription):
            o["type"] = "unsubscribe"
            o["subscription"] = .string(subscription)
        case .publish(_, let stream, let events, let batch, let key, let trace):
            o["type"] = "publish"
            o["stream"] = .string(stream)
            if let key { o["key"] = .string(key) }
            if let trace { o["traceparent"] = .string(trace) }
            if batch || events.count != 1 { o["events"] = .array(events) } else { o["event"] = events[0] }
        case .ack(_, let subscription, let seq):
            o["type"] = "ack"
            o["subscription"] = .string(subscription)
            o["seq"] = .int(seq)
        case .fetch(_, let subscription, let after, let limit):
            o["type"] = "fetch"
            o["subscription"] = .string(subscription)
            o["after"] = .int(after)
            o["limit"] = .int(Int64(limit))
        case .ping:
            o["type"] = "ping"
        case .refresh(_, let token):
            o["type"] = "refresh"
            o["token"] = .string(token)
        case .write(_, let dataset, let writes):
            o["type"] = "write"
            o["dataset"] = .string(dataset)
            o["writes"] = .array(writes)
        }
        return JSONValue.object(o).serialized
    }
}

/// A request that could not be decoded: the error to send back, with the request id if known.
public struct WireError: Error, Sendable, Hashable {
    public var id: String?
    public var error: TocsinError
}


