import HTTPTypes
import Hummingbird

import Logging
import TocsinHTTPClient
import TocsinCore
import TocsinHTTP
import TocsinStore

/// The JSON HTTP API under /v1 (docs/protocol.md, "HTTP API").
struct HTTPAPI: Sendable {
    let broker: Broker

    /// Registers every route with what it requires (docs/security.md, "Permissions"); returns them.
    func register(on routes: GuardedRoutes<TocsinRequestContext>) {
        let router = routes.router
        routes.open(.get, "/healthz") { _, _ in Response.json(#"{"status":"ok"}"#) }
        routes.open(.get, "/readyz") { _, _ in await self.ready() }
        routes.addOpenAPIRoute()

        // Discovery: every broker serves the network's broker list, so any node is a seed.
        routes.on(.get, "/v1/cluster", .discovery) { _, _, _ in
            Response.json(broker.clusterView.json)
        }
        // Assignment is the controller's; a broker forwards the question (or, standalone, answers itself).
        routes.on(.get, "/v1/assign", .discovery) { request, _, _ in
            guard let controller = broker.controller else {
                // Standalone: a network of one, but the question is checked as the controller would.
                _ = try request.assignmentRequest()
                let me = broker.standaloneSummary
                return .json(JSONValue.object(["broker": me.json, "alternates": .array([]), "region": .string(me.region)]))
            }
            let question = try request.assignmentRequest()
            do {
                return .json(try await controller.assign(question, timeout: .seconds(5)).json)
            } catch let refused as TocsinError {
                throw refused  // the controller's answer, relayed as it is
            } catch {
                throw TocsinError(.unavailable, "the controller at \(controller.url) cannot be reached: \(error)")
            }
        }
        router.refuseMethods(on: "/v1/assign", except: [.get])

        // Lists show what the token may use (everything for admin).
        routes.on(.get, "/v1/streams", .authenticated) { _, _, grant in
            let streams = try await storeCall("listing streams") { try await broker.store.streams() }.filter { info in
                grant.map { $0.allows(.admin) || $0.allows(.publish(stream: info.definition.name)) || $0.allows(.read(stream: info.definition.name)) } ?? true
            }
            return .json(StreamList(streams: streams.map(StreamDescription.init)).json.serialized)
        }
        routes.on(.put, "/v1/streams/:name", .admin) { request, context, _ in
            let name = context.parameters.get("name") ?? ""
            let body = try await self.body(request)
            let definition = try StreamDefinition(name: name, json: body)
            let recreate = request.uri.queryParameters.get("recreate") == "true"
            let (info, outcome) = try await broker.definitions.putStream(definition, recreate: recreate)
            return .json(StreamDescription(info).json.serialized, status: outcome == .created ? .created : .ok)
        }
        routes.on(.get, "/v1/streams/:name", requires: "read:{name}", Self.named(Permission.read)) { _, context, _ in
            let name = context.parameters.get("name") ?? ""
            return .json(StreamDescription(try await broker.store.requireStream(name)).json.serialized)
        }
        routes.on(.post, "/v1/streams/:name/events", requires: "publish:{name}", Self.named(Permission.publish)) { request, context, grant in
            let name = context.parameters.get("name") ?? ""
            let body = try await self.body(request)
            let events: [JSONValue]
            if case .array(let list) = body { events = list } else { events = [body] }
            try broker.limits.take(.publish, key: grant?.client, cost: events.count)
            let keys = request.headers[values: .idempotencyKey]
            guard keys.count <= 1 else { throw TocsinError(.badRequest, "give one Idempotency-Key header, not \(keys.count)") }
            let publishKey = try keys.first.map { key throws(TocsinError) in try PublishKey.validated(key) }
            // W3C Trace Context: a malformed header is ignored (the publish starts a trace of its own).
            let traceparent = request.headers[values: .traceparent].count == 1 ? request.headers[.traceparent] : nil
            let published = try await broker.publish(stream: name, events: events, key: publishKey, traceparent: traceparent)
            // An object body (one event) is also answered with its `seq`.
            var single = true
            if case .array = body { single = false }
            let reply = PublishReply(
                stream: name, epoch: published.epoch, seqs: published.seqs, seq: single ? published.seqs.last ?? 0 : nil,
                duplicate: published.duplicate)
            return .json(reply.json.serialized, status: published.duplicate ? .ok : .created)
        }
        routes.on(.get, "/v1/streams/:name/events", requires: "read:{name}", Self.named(Permission.read)) { request, context, _ in
            let name = context.parameters.get("name") ?? ""
            let after = try request.intQuery("after", default: 0, range: 0...Int64.max)
            let limit = try request.intQuery("limit", default: 100, range: 1...10_000)
            let info = try await broker.store.requireStream(name)
            let events = try await storeCall("reading events") {
                try await broker.store.readEvents(stream: name, after: after, limit: Int(limit))
            }
            let page = EventsPage(
                stream: name, epoch: info.epoch, lastSeq: info.lastSeq, firstSeq: info.firstSeq,
                events: events)
            return .json(page.encoded)
        }

        routes.on(.get, "/v1/channels", .authenticated) { _, _, grant in
            let channels = broker.catalog.channels.sorted { $0.name < $1.name }.filter { channel in
                grant.map { $0.allows(.admin) || $0.allows(.subscribe(channel: channel.name)) } ?? true
            }
            return .json(ChannelList(channels: channels.map(ChannelDescription.init)).json.serialized)
        }
        routes.on(.put, "/v1/channels/:name", .admin) { request, context, _ in
            let name = context.parameters.get("name") ?? ""
            let definition = try ChannelDefinition(name: name, json: try await self.body(request))
            let (compiled, outcome) = try await broker.definitions.putChannel(definition)
            return .json(ChannelDescription(compiled).json.serialized, status: outcome == .created ? .created : .ok)
        }
        routes.on(.get, "/v1/channels/:name", requires: "subscribe:{name}", Self.named(Permission.subscribe)) { _, context, _ in
            let channel = try broker.catalog.requireChannel(context.parameters.get("name") ?? "")
            return .json(ChannelDescription(channel).json.serialized)
        }
        routes.on(.delete, "/v1/channels/:name", .admin) { _, context, _ in
            try await broker.definitions.deleteChannel(context.parameters.get("name") ?? "")
            return Response(status: .noContent)
        }

        registerDatasets(on: routes)

        // The subscription's owner only: `fetch` checks the grant's client id against it.
        routes.on(.get, "/v1/subscriptions/:id/results", .authenticated) { request, context, grant in
            let after = try request.intQuery("after", default: 0, range: 0...Int64.max)
            let limit = try request.intQuery("limit", default: 100, range: 1...10_000)
            let fetched = try await broker.publishing.fetch(
                subscription: context.parameters.get("id") ?? "", client: grant?.client, after: after, limit: Int(limit), grant: grant)
            return .json(ServerMessage.fetched(id: nil, subscription: fetched.subscription, events: fetched.events, seq: fetched.seq).encoded)
        }
    }

    /// The permission of a route on a named stream or channel (`:name`).
    static func named(_ permission: @escaping @Sendable (String) -> Permission) -> @Sendable (Request, TocsinRequestContext) -> Permission? {
        { _, context in permission(context.parameters.get("name") ?? "") }
    }

    func body(_ request: Request) async throws(TocsinError) -> JSONValue {
        try await request.jsonBody(limit: broker.configuration.maxBodyBytes)
    }

    private func ready() async -> Response {
        do {
            try await broker.store.checkReadable()
            return .json(#"{"status":"ready"}"#)
        } catch let error as TocsinError where error.code == .storeUnavailable {
            // The store's database is down or failing over: 503 with Retry-After, as publishes get.
            return TocsinError(.storeUnavailable, "the store is not reachable: \(error.message)").response
        } catch {
            return TocsinError(.unavailable, "the store is not reachable: \(error)").response
        }
    }
}

extension StreamDescription {
    init(_ info: StreamInfo) {
        self.init(
            definition: info.definition, epoch: info.epoch, lastSeq: info.lastSeq, firstSeq: info.firstSeq,
            createdAtMillis: info.createdAtMillis)
    }
}

extension ChannelDescription {
    init(_ channel: CompiledChannel) {
        self.init(definition: channel.definition, index: channel.plan.summary(schema: channel.schema, params: channel.definition.params))
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
    /// W3C Trace Context: the publisher's trace, which the publish span joins.
    static let traceparent = HTTPField.Name("traceparent")!
}
