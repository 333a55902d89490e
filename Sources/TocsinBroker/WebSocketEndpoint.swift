import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOWebSocket
import TocsinCore
import TocsinStore
import TocsinHTTP

/// The WebSocket protocol at /v1/ws (docs/protocol.md): what each client message does. A
/// connection (`WebSocketConnection`) hands its messages here in order, on a task that runs
/// while it has any (`WebSocketRequests`); publishes are pipelined (the next message is handled
/// while they commit, see `PublishWindow`), and every reply still goes out in request order. The
/// session's outbox is drained to the socket on the channel's event loop; replays run beside
/// the requests. A bad message gets an `error` reply and the connection stays open; nothing a
/// client sends can affect another client.
struct WebSocketEndpoint: Sendable {
    let broker: Broker

    /// Plain HTTP at the WebSocket's path: `GET /v1/ws` without an upgrade is answered `426
    /// upgrade_required`, and an upgrade refused (a disallowed `Origin`, a bad token in the
    /// upgrade; `BrokerChildChannel` hands it here) is answered with its error.
    func register(on routes: GuardedRoutes<TocsinRequestContext>) {
        routes.open(.get, "/v1/ws") { request, _ in
            _ = try await self.upgradeGrant(request)
            let upgrading = request.headers[.upgrade]?.lowercased() == "websocket"
            var response =
                upgrading
                ? TocsinError(.upgradeRequired, "a WebSocket upgrade must be the first request on its connection; open a new one").response
                : TocsinError(.upgradeRequired, "GET /v1/ws opens a WebSocket: send Upgrade: websocket (RFC 6455)").response
            response.headers[.upgrade] = "websocket"
            response.headers[.connection] = upgrading ? "close" : "Upgrade"
            return response
        }
    }

    /// Decides an upgrade to /v1/ws: the headers of its 101 (the `tocsin` subprotocol when
    /// offered) and the grant of the token it carried, or why it is refused.
    func decideUpgrade(_ request: Request) async -> Result<(headers: HTTPFields, grant: Grant?), TocsinError> {
        guard request.uri.path == "/v1/ws" else { return .failure(TocsinError(.notFound, "the WebSocket endpoint is /v1/ws")) }
        do {
            let grant = try await upgradeGrant(request) ?? nil
            var headers = HTTPFields()
            if Self.offeredProtocols(request.headers).contains(Self.subprotocol) { headers[.secWebSocketProtocol] = Self.subprotocol }
            return .success((headers, grant))
        } catch {
            return .failure(error)
        }
    }

    /// The subprotocol a browser offers beside its token (`bearer.<token>`), echoed in the 101.
    static let subprotocol = "tocsin"

    /// Checks an upgrade request: its `Origin` must be allowed, and a token it carries
    /// (`Authorization: Bearer`, or a `bearer.<token>` subprotocol for browsers, which cannot set
    /// headers) must verify. Returns that token's grant, `.some(nil)` without one (the `hello`
    /// must bring it) or with authentication disabled.
    func upgradeGrant(_ request: Request) async throws(TocsinError) -> Grant?? {
        try broker.access.checkOrigin(request)
        guard let verifier = broker.access.authentication.verifier else { return .some(nil) }
        let token = try HTTPAccess.bearer(request.headers) ?? Self.offeredProtocols(request.headers).first { $0.hasPrefix("bearer.") }.map { String($0.dropFirst(7)) }
        guard let token else { return .some(nil) }
        return .some(try await verifier.verify(token, nowMillis: broker.nowMillis()))
    }

    static func offeredProtocols(_ headers: HTTPFields) -> [String] {
        headers[values: .secWebSocketProtocol].flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
    }

    /// Handles one client message; returns replays to start once the reply is queued. A
    /// publish returns once it is queued for commit (its reply follows from the commit thread),
    /// and an ack once applied; anything else, and any error reply, first waits for the
    /// publishes before it to be answered. `bytes`: the message's size, for the publish window.
    func handle(
        _ decoded: Result<ClientMessage, WireError>, bytes: Int, session: Session, publishes: PublishWindow, expiry: TokenExpiry? = nil
    ) async -> [PendingReplay] {
        let message: ClientMessage
        switch decoded {
        case .failure(let e):
            await publishes.drained()
            reject(id: e.id, e.error, session: session)
            return []
        case .success(let m):
            message = m
        }
        if broker.access.authentication.verifier != nil, message.kind != .hello, message.kind != .refresh {
            do {
                try authorize(message, session: session)
            } catch {
                await publishes.drained()
                reject(id: message.id, error, session: session)
                return []
            }
        }
        switch message {
        case .publish(let id, let stream, let events, _, let key, let trace):
            await publish(id: id, stream: stream, events: events, key: key, trace: trace, bytes: bytes, session: session, publishes: publishes)
            return []
        case .ack(let id, let subscription, let seq):
            // No reply unless it fails, so it need not wait for the publishes before it.
            do {
                try broker.subscriptions.ack(session: session, subscription: subscription, seq: seq)
            } catch {
                await publishes.drained()
                reject(id: id, error, session: session)
            }
            return []
        default:
            await publishes.drained()
        }
        do {
            switch message {
            case .hello(let id, let client, let token):
                let identity = try await authenticateHello(client: client, token: token, session: session, expiry: expiry)
                let welcome = try await broker.subscriptions.hello(
                    session: session, client: identity, grant: session.grant, nowMillis: broker.nowMillis())
                for failure in welcome.failures { session.send(.error(id: nil, failure)) }
                session.send(
                    .welcome(
                        id: id, session: welcome.session, broker: welcome.broker, client: welcome.client,
                        subscriptions: welcome.subscriptions))
                return welcome.replay.map { [$0] } ?? []
            case .subscribe(let id, let channel, let params, let from):
                try broker.limits.take(.subscribe, key: session.rateKey)
                let (info, replay) = try await broker.subscriptions.subscribe(session: session, channel: channel, params: params, from: from)
                session.send(.subscribed(id: id, info))
                return replay.map { [$0] } ?? []
            case .unsubscribe(let id, let subscription):
                try await broker.subscriptions.unsubscribe(session: session, subscription: subscription)
                session.send(.unsubscribed(id: id, subscription: subscription))
            case .publish, .ack:
                break  // handled above, without waiting for earlier publishes
            case .fetch(let id, let subscription, let after, let limit):
                guard let client = session.client else { throw TocsinError(.notIdentified, "send hello first") }
                let attached = session.stream(ofSubscription: subscription)
                    .flatMap { broker.tails.existing($0)?.attachedView(subscription, session: session) }
                let fetched = try await broker.publishing.fetch(
                    subscription: subscription, client: client, after: after, limit: limit, grant: session.grant, attached: attached)
                session.send(.fetched(id: id, subscription: fetched.subscription, events: fetched.events, seq: fetched.seq))
            case .ping(let id):
                session.send(.pong(id: id))
            case .refresh(let id, let token):
                let grant = try await refresh(token: token, session: session, expiry: expiry)
                session.send(.refreshed(id: id, expiresAtMillis: grant.expiresAtMillis))
            case .write(let id, let dataset, let writes):
                let version = try await writeOwnRecords(dataset: dataset, writes: writes, session: session)
                session.send(.written(id: id, dataset: dataset, version: version, written: writes.count))
            }
        } catch {
            reject(id: message.id, TocsinError.from(error), session: session)
        }
        return []
    }

    /// A `write`: the client's own records only (every key is its id, or one of its `<id>#…`
    /// sub-identities with a token), validated whole, stored in one batch. Returns the version.
    func writeOwnRecords(dataset: String, writes: [JSONValue], session: Session) async throws(TocsinError) -> Int64 {
        guard let client = session.client else { throw TocsinError(.notIdentified, "send hello first") }
        let definition = try broker.catalog.requireDataset(dataset)
        guard writes.count <= broker.configuration.maxBatchEvents else {
            throw TocsinError(.tooLarge, "a write may hold at most \(broker.configuration.maxBatchEvents) records, got \(writes.count)")
        }
        try broker.limits.take(.publish, key: session.rateKey, cost: writes.count)
        var stored: [DatasetRecordWrite] = []
        stored.reserveCapacity(writes.count)
        for (i, json) in writes.enumerated() {
            let write: DatasetWrite
            switch DatasetTable.write(from: json, definition: definition) {
            case .success(let w): write = w
            case .failure(let error): throw TocsinError(error.code, writes.count > 1 ? "write \(i): \(error.message)" : error.message)
            }
            let key: Value
            switch write {
            case .upsert(let record): key = record[definition.keySlot]
            case .delete(let k): key = k
            }
            let own: Bool
            if case .string(let s) = key {
                own = session.grant.map { $0.mayIdentify(as: s) } ?? (s == client)
            } else {
                own = false
            }
            guard own else {
                throw TocsinError(
                    .forbidden, "write \(i): a connection writes only its own records (key '\(client)'); write others' over HTTP with write:\(dataset)")
            }
            stored.append(DatasetRecordWrite(write, definition: definition))
        }
        let records = stored
        return try await storeCall("writing records") { try await broker.store.writeDataset(definition.name, writes: records) }
    }

    /// With authentication on: the connection's token must allow the message (hello and
    /// refresh bring their own). Ack, unsubscribe and fetch act on the client's own
    /// subscriptions only (its id is the token's); subscribe and publish need their scope.
    func authorize(_ message: ClientMessage, session: Session) throws(TocsinError) {
        guard let grant = session.grant else {
            throw TocsinError(.unauthorized, "send hello with a token first (or give it in the upgrade's Authorization header)")
        }
        let permission: Permission =
            switch message {
            case .subscribe(_, let channel, _, _): .subscribe(channel: channel)
            case .publish(_, let stream, _, _, _, _): .publish(stream: stream)
            case .write(_, let dataset, _): .write(dataset: dataset)
            case .hello, .refresh, .unsubscribe, .ack, .fetch, .ping: .authenticated
            }
        try grant.check(permission, nowMillis: broker.nowMillis())
    }

    /// The client id a hello identifies as. With authentication on, it is the token's
    /// (from the hello, or the upgrade's): a hello naming another client is refused.
    func authenticateHello(client: String?, token: String?, session: Session, expiry: TokenExpiry?) async throws(TocsinError) -> String? {
        guard let verifier = broker.access.authentication.verifier else { return client }
        let grant: Grant
        if let token {
            grant = try await verifier.verify(token, nowMillis: broker.nowMillis())
        } else if let existing = session.grant {
            try existing.check(.authenticated, nowMillis: broker.nowMillis())
            grant = existing
        } else {
            throw TocsinError(.unauthorized, "this broker needs a token: give 'token' in hello, or 'Authorization: Bearer' in the upgrade")
        }
        if let client, !grant.mayIdentify(as: client) {
            throw TocsinError(.forbidden, "the token is client '\(grant.client)'s; it cannot say hello as '\(client)'")
        }
        if let previous = session.grant, previous.client != grant.client {
            throw TocsinError(.forbidden, "this connection is client '\(previous.client)'s; a token of '\(grant.client)' cannot take it over")
        }
        if session.admittedClient == nil {
            try broker.limits.take(.connection, key: grant.client)
            try broker.limits.open(client: grant.client)
            session.admittedClient = grant.client
        }
        session.grant = grant
        expiry?.schedule(for: grant)
        return client ?? grant.client
    }

    /// Replaces the connection's token with a fresh one of the same client.
    func refresh(token: String, session: Session, expiry: TokenExpiry?) async throws(TocsinError) -> Grant {
        guard let verifier = broker.access.authentication.verifier else {
            throw TocsinError(.badRequest, "this broker does not use tokens (it runs with --insecure-no-auth)")
        }
        let grant = try await verifier.verify(token, nowMillis: broker.nowMillis())
        if let current = session.grant, current.client != grant.client {
            throw TocsinError(.forbidden, "a refresh must be for the same client ('\(current.client)'), not '\(grant.client)'")
        }
        session.grant = grant
        expiry?.schedule(for: grant)
        return grant
    }

    /// Queues a publish for commit; the commit thread sends its reply. An invalid event is
    /// answered here, once the publishes before it have been.
    func publish(
        id: String?, stream: String, events: [JSONValue], key: String?, trace: String?, bytes: Int, session: Session,
        publishes: PublishWindow
    ) async {
        await publishes.begin(bytes: bytes)
        do {
            try queueForCommit(id: id, stream: stream, events: events, key: key, trace: trace, bytes: bytes, session: session, publishes: publishes)
        } catch {
            publishes.end(bytes: bytes)
            await publishes.drained()
            reject(id: id, error, session: session)
        }
    }

    /// What `publishAtOnce` did.
    enum AtOnce {
        /// Queued for commit; the commit thread answers it.
        case queued
        /// Refused: the error reply must wait for the publishes before it (`publishes.drained()`).
        case refused(id: String?, TocsinError)
        /// Not a publish, or one that would have to wait for room: nothing was done.
        case notNow
    }

    /// Queues a publish for commit without waiting for anything, on the caller's thread: the
    /// connection's event loop, so a publish reaches the commit thread with no task in between.
    /// Does nothing (`notNow`) for any other message, or when the window or the budget has no
    /// room now. Only for a connection with no earlier message still being handled.
    func publishAtOnce(_ decoded: Result<ClientMessage, WireError>, bytes: Int, session: Session, publishes: PublishWindow) -> AtOnce {
        guard case .success(let message) = decoded, case .publish(let id, let stream, let events, _, let key, let trace) = message else {
            return .notNow
        }
        if broker.access.authentication.verifier != nil {
            do {
                try authorize(message, session: session)
            } catch {
                return .refused(id: id, error)
            }
        }
        guard publishes.tryBegin(bytes: bytes) else { return .notNow }
        do {
            try queueForCommit(id: id, stream: stream, events: events, key: key, trace: trace, bytes: bytes, session: session, publishes: publishes)
            return .queued
        } catch {
            publishes.end(bytes: bytes)
            return .refused(id: id, error)
        }
    }

    /// Counts a publish begun in `publishes` against the rate limit and queues it for commit;
    /// the commit thread sends the reply and ends it in the window. Throws (and queues nothing)
    /// when it is refused.
    private func queueForCommit(
        id: String?, stream: String, events: [JSONValue], key: String?, trace: String?, bytes: Int, session: Session,
        publishes: PublishWindow
    ) throws(TocsinError) {
        try broker.limits.take(.publish, key: session.rateKey, cost: events.count)
        try broker.publishing.publish(stream: stream, events: events, key: key, traceparent: trace) { [self] result in
            switch result {
            case .success(let r): session.send(.published(id: id, stream: stream, epoch: r.epoch, seqs: r.seqs, duplicate: r.duplicate))
            case .failure(let error): reject(id: id, error, session: session)
            }
            publishes.end(bytes: bytes)
        }
    }

    /// Answers a request with `error`.
    func reject(id: String?, _ error: TocsinError, session: Session) {
        broker.metrics.protocolErrors.increment()
        if error.code == .internalError {
            session.logger.error("request failed", metadata: ["error": "\(error.message)"])
        }
        session.send(.error(id: id, error))
    }
}
