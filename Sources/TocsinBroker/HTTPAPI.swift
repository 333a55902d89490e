import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import TocsinHTTPClient
import TocsinCore
import TocsinHTTP
import TocsinStore

/// The JSON HTTP API under /v1 (docs/protocol.md, "HTTP API").
struct HTTPAPI: Sendable {
    let broker: Broker

    func register(on router: Router<TocsinRequestContext>) {
        router.get("/healthz") { _, _ in Response.json(#"{"status":"ok"}"#) }
        router.get("/readyz") { _, _ in await self.ready() }

        // Discovery: every broker serves the network's broker list, so any node is a seed.
        router.get("/v1/cluster") { _, _ in
            Response.json(broker.clusterView.json)
        }
        // Assignment is the controller's; a broker forwards the question (or, standalone, answers itself).
        router.get("/v1/assign") { request, _ in
            await self.api {
                guard let controller = broker.clusterView.controller else {
                    // Standalone: a network of one, but the question is checked as the controller would.
                    _ = try request.assignmentRequest()
                    let me = broker.standaloneSummary
                    return .json(JSONValue.object(["broker": me.json, "alternates": .array([]), "region": .string(me.region)]))
                }
                let query = request.uri.query.map { "?" + $0 } ?? ""
                do {
                    let reply = try await HTTPCall.send(.GET, controller + "/v1/assign" + query, timeout: .seconds(5))
                    return .json(reply.body, status: .init(code: reply.status))
                } catch {
                    throw TocsinError(.unavailable, "the controller at \(controller) cannot be reached: \(error)")
                }
            }
        }
        router.refuseMethods(on: "/v1/assign", except: [.get])

        router.get("/v1/streams") { _, _ in
            await self.api {
                let streams = try await storeCall("listing streams") { try await broker.store.streams() }
                return .json(JSONValue.object(["streams": .array(streams.map(Self.json))]).serialized)
            }
        }
        router.put("/v1/streams/:name") { request, context in
            await self.api {
                let name = context.parameters.get("name") ?? ""
                let body = try await self.body(request)
                let definition = try StreamDefinition(name: name, json: body)
                let recreate = request.uri.queryParameters.get("recreate") == "true"
                let (info, outcome) = try await broker.putStream(definition, recreate: recreate)
                return .json(Self.json(info).serialized, status: outcome == .created ? .created : .ok)
            }
        }
        router.get("/v1/streams/:name") { _, context in
            await self.api {
                let name = context.parameters.get("name") ?? ""
                guard let info = try await storeCall("reading the stream", { try await broker.store.stream(named: name) }) else {
                    throw TocsinError(.unknownStream, "no stream named '\(name)'")
                }
                return .json(Self.json(info).serialized)
            }
        }
        router.post("/v1/streams/:name/events") { request, context in
            await self.api {
                let name = context.parameters.get("name") ?? ""
                let body = try await self.body(request)
                let events: [JSONValue]
                if case .array(let list) = body { events = list } else { events = [body] }
                let keys = request.headers[values: .idempotencyKey]
                guard keys.count <= 1 else { throw TocsinError(.badRequest, "give one Idempotency-Key header, not \(keys.count)") }
                let key = try keys.first.map { key throws(TocsinError) in try PublishKey.validated(key) }
                let published = try await broker.publish(stream: name, events: events, key: key)
                var out: [String: JSONValue] = [
                    "stream": .string(name), "epoch": .string(published.epoch), "seqs": .array(published.seqs.map { .int($0) }),
                ]
                if case .array = body {} else { out["seq"] = .int(published.seqs.last ?? 0) }
                if published.duplicate { out["duplicate"] = true }
                return .json(JSONValue.object(out).serialized, status: published.duplicate ? .ok : .created)
            }
        }
        router.get("/v1/streams/:name/events") { request, context in
            await self.api {
                let name = context.parameters.get("name") ?? ""
                let after = try request.intQuery("after", default: 0, range: 0...Int64.max)
                let limit = try request.intQuery("limit", default: 100, range: 1...10_000)
                guard let info = try await storeCall("reading the stream", { try await broker.store.stream(named: name) }) else {
                    throw TocsinError(.unknownStream, "no stream named '\(name)'")
                }
                let events = try await storeCall("reading events") {
                    try await broker.store.readEvents(stream: name, after: after, limit: Int(limit))
                }
                var out = "{\"stream\":"
                JSONWriter.writeString(name, into: &out)
                out += ",\"epoch\":"
                JSONWriter.writeString(info.epoch, into: &out)
                out += ",\"lastSeq\":\(info.lastSeq),\"firstSeq\":\(info.firstSeq),\"events\":["
                for (i, e) in events.enumerated() {
                    if i > 0 { out += "," }
                    out += "{\"seq\":\(e.seq),\"publishedAt\":"
                    JSONWriter.writeString(TimeFormat.format(e.publishedAtMillis), into: &out)
                    out += ",\"event\":\(e.json)}"
                }
                out += "]}"
                return .json(out)
            }
        }

        router.get("/v1/channels") { _, _ in
            await self.api {
                let channels = broker.catalog.channels.sorted { $0.name < $1.name }
                return .json(JSONValue.object(["channels": .array(channels.map(Self.json))]).serialized)
            }
        }
        router.put("/v1/channels/:name") { request, context in
            await self.api {
                let name = context.parameters.get("name") ?? ""
                let definition = try ChannelDefinition(name: name, json: try await self.body(request))
                let (compiled, outcome) = try await broker.putChannel(definition)
                return .json(Self.json(compiled).serialized, status: outcome == .created ? .created : .ok)
            }
        }
        router.get("/v1/channels/:name") { _, context in
            await self.api {
                let channel = try broker.catalog.requireChannel(context.parameters.get("name") ?? "")
                return .json(Self.json(channel).serialized)
            }
        }
        router.delete("/v1/channels/:name") { _, context in
            await self.api {
                try await broker.deleteChannel(context.parameters.get("name") ?? "")
                return Response(status: .noContent)
            }
        }

        router.get("/v1/subscriptions/:id/results") { request, context in
            await self.api {
                let after = try request.intQuery("after", default: 0, range: 0...Int64.max)
                let limit = try request.intQuery("limit", default: 100, range: 1...10_000)
                let fetched = try await broker.fetch(
                    subscription: context.parameters.get("id") ?? "", client: nil, after: after, limit: Int(limit))
                return .json(fetched.encoded)
            }
        }
    }

    private func api(_ body: () async throws -> Response) async -> Response {
        await respond(logger: broker.logger, body)
    }

    private func body(_ request: Request) async throws(TocsinError) -> JSONValue {
        try await request.jsonBody(limit: broker.configuration.maxBodyBytes)
    }

    private func ready() async -> Response {
        do {
            _ = try await broker.store.streams()
            return .json(#"{"status":"ready"}"#)
        } catch {
            return TocsinError(.unavailable, "the store is not reachable: \(error)").response
        }
    }

    static func json(_ info: StreamInfo) -> JSONValue {
        var retention: [String: JSONValue] = [:]
        if let a = info.definition.retention.maxAgeSeconds { retention["maxAgeSeconds"] = .int(a) }
        if let e = info.definition.retention.maxEvents { retention["maxEvents"] = .int(e) }
        if info.definition.retention.whenFull != .refuse { retention["whenFull"] = .string(info.definition.retention.whenFull.rawValue) }
        return .object([
            "name": .string(info.name),
            "fields": .array(
                info.definition.schema.fields.map { f in
                    .object(["name": .string(f.name), "type": .string(f.type.rawValue), "optional": .bool(f.optional)])
                }),
            "retention": .object(retention),
            "epoch": .string(info.epoch),
            "lastSeq": .int(info.lastSeq),
            "firstSeq": .int(info.firstSeq),
            "createdAt": .string(TimeFormat.format(info.createdAtMillis)),
        ])
    }

    static func json(_ channel: CompiledChannel) -> JSONValue {
        guard case .object(var o) = channel.definition.json else { return .null }
        o["index"] = .string(channel.plan.summary(schema: channel.schema, params: channel.definition.params))
        return .object(o)
    }
}

extension IndexPlan {
    /// How the matcher indexes the channel, for operators (`GET /v1/channels/{name}`).
    func summary(schema: StreamSchema, params: [ChannelParameter]) -> String {
        func field(_ i: Int) -> String { schema.fields[i].name }
        func param(_ i: Int) -> String { "$" + params[i].name }
        func operand(_ o: Operand) -> String {
            switch o {
            case .param(let i): param(i)
            case .constant(let c): "\(c)"
            }
        }
        switch self {
        case .equality(let f, let p): return "hash(\(field(f)) == \(param(p)))"
        case .membership(let f, let p): return "hash(\(field(f)) in \(param(p)))"
        case .geoRadius(let f, let lat, let lon, let r, let inclusive):
            return "geo(distance(\(field(f)), point(\(operand(lat)), \(operand(lon)))) \(inclusive ? "<=" : "<") \(operand(r)))"
        case .threshold(let f, let c, let b): return "sorted(\(field(f)) \(c.rawValue) \(operand(b)))"
        case .scan: return "scan"
        }
    }
}

extension HTTPField.Name {
    /// A publish's key (`PublishKey`) over HTTP.
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
}
