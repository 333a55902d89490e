import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import TocsinCore
import TocsinHTTP

/// The WebSocket protocol at /v1/ws (docs/protocol.md). One task reads frames and handles them
/// in order; publishes are pipelined (the task goes on reading while they commit, see
/// `PublishWindow`), and every reply still goes out in request order. The session's outbox is
/// drained to the socket on the channel's event loop; replays run beside the reader. A bad
/// frame gets an `error` reply and the connection stays open; nothing a client sends can
/// affect another client.
struct WebSocketEndpoint: Sendable {
    let broker: Broker

    /// `webSocketRouter` decides upgrades; `router` serves plain HTTP, where `GET /v1/ws` without
    /// an upgrade is answered `426 upgrade_required`.
    func register(on router: Router<TocsinRequestContext>, webSocketRouter: Router<TocsinRequestContext>) {
        webSocketRouter.ws("/v1/ws") { _, context in
            // In place before the 101 goes out: every frame after the handshake is checked.
            try await context.channel.addHandlerNearestTheSocket { ClientFrameMaskCheck() }
            return .upgrade([:])
        } onUpgrade: { inbound, _, context in
            try await self.serve(inbound: inbound, channel: context.requestContext.channel, logger: context.logger)
        }
        router.get("/v1/ws") { _, _ in
            var response = TocsinError(.upgradeRequired, "GET /v1/ws opens a WebSocket: send Upgrade: websocket (RFC 6455)").response
            response.headers[.upgrade] = "websocket"
            response.headers[.connection] = "Upgrade"
            return response
        }
    }

    /// Serves one WebSocket connection until it closes. Throws only to have the WebSocket layer
    /// close with a specific code (1007 for invalid UTF-8, 1009 for a message assembled from
    /// fragments over the transport limit, 1002 for protocol errors); everything else ends here.
    func serve(inbound: WebSocketInboundStream, channel: any Channel, logger: Logger) async throws {
        let sessionID = "ws-" + UUID().uuidString.lowercased().prefix(13)
        var logger = logger
        logger[metadataKey: "session"] = "\(sessionID)"
        let configuration = broker.configuration
        let metrics = broker.metrics
        let broker = self.broker
        let writer = NIOLoopBoundBox.makeBoxSendingValue(FrameWriter(channel: channel), eventLoop: channel.eventLoop)
        let session = Session(
            id: String(sessionID), maxOutboundBytes: configuration.maxOutboundBytes, logger: logger, eventLoop: channel.eventLoop
        ) { session in
            Self.drain(session, to: channel, writer: writer.value, broker: broker)
        }
        // Tells the session when the socket takes its bytes again (waiting replays go on).
        try? await channel.addHandlerNearestTheSocket { WritabilityObserver(session: session) }
        // The first message must come within the timeout (`hello`, or a publisher's first request).
        // Counted, logged at debug only: a flood of silent connections must not flood the log.
        let silence = channel.eventLoop.scheduleTask(in: .nanoseconds(configuration.firstMessageTimeout.nanoseconds)) {
            broker.metrics.timeouts.increment()
            session.logger.debug("closing a WebSocket that sent nothing", metadata: ["timeoutMs": "\(configuration.firstMessageTimeout.milliseconds)"])
            session.close(.silent)
        }
        defer { silence.cancel() }
        let publishes = PublishWindow(
            capacity: max(configuration.maxPipelinedPublishes, 1), byteCapacity: max(configuration.maxPipelinedPublishBytes, 0),
            budget: broker.publishBudget)
        metrics.sessionsOpened.increment()
        broker.sessions.opened(session)
        let failure: (any Error)? = await withDiscardingTaskGroup { group in
            var failure: (any Error)?
            var spoke = false
            do {
                // The transport limit is above the protocol limit, so an oversized message
                // can be answered with `too_large` instead of a dropped connection.
                for try await message in inbound.messages(maxSize: configuration.maxMessageBytes * 4) {
                    if !spoke {
                        spoke = true
                        silence.cancel()
                    }
                    guard case .text(let text) = message else {
                        await publishes.drained()
                        reject(id: nil, TocsinError(.badRequest, "binary frames are not supported; send JSON text frames"), session: session)
                        continue
                    }
                    let size = text.utf8.count
                    guard size <= configuration.maxMessageBytes else {
                        await publishes.drained()
                        reject(
                            id: nil, TocsinError(.tooLarge, "a message may be at most \(configuration.maxMessageBytes) bytes, got \(size)"),
                            session: session)
                        continue
                    }
                    for replay in await handle(text, session: session, publishes: publishes) {
                        group.addTask { await replay.run() }
                    }
                }
            } catch {
                logger.debug("connection ended", metadata: ["error": "\(error)"])
                failure = error
            }
            await broker.subscriptions.closed(session: session)
            metrics.sessionsClosed.increment()
            group.cancelAll()
            return failure
        }
        // The WebSocket layer closes with the code a protocol error carries (1002, 1007, 1009).
        if let failure { throw failure }
    }

    /// Handles one client frame; returns replays to start once the reply is queued. A publish
    /// returns once it is queued for commit (its reply follows from the commit thread), and an
    /// ack once applied; anything else, and any error reply, first waits for the publishes
    /// before it to be answered.
    func handle(_ text: String, session: Session, publishes: PublishWindow) async -> [PendingReplay] {
        let message: ClientMessage
        switch ClientMessage.decode(text.utf8) {
        case .failure(let e):
            await publishes.drained()
            reject(id: e.id, e.error, session: session)
            return []
        case .success(let m):
            message = m
        }
        switch message {
        case .publish(let id, let stream, let events, _, let key):
            await publish(id: id, stream: stream, events: events, key: key, bytes: text.utf8.count, session: session, publishes: publishes)
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
            case .hello(let id, let client):
                let welcome = try await broker.subscriptions.hello(session: session, client: client)
                for failure in welcome.failures { session.send(.error(id: nil, failure)) }
                session.send(
                    .welcome(
                        id: id, session: welcome.session, broker: welcome.broker, client: welcome.client,
                        subscriptions: welcome.subscriptions))
                return welcome.replay.map { [$0] } ?? []
            case .subscribe(let id, let channel, let params, let from):
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
                let fetched = try await broker.publishing.fetch(subscription: subscription, client: client, after: after, limit: limit)
                session.send(.fetched(id: id, subscription: fetched.subscription, events: fetched.events, seq: fetched.seq))
            case .ping(let id):
                session.send(.pong(id: id))
            }
        } catch {
            reject(id: message.id, TocsinError.from(error), session: session)
        }
        return []
    }

    /// Queues a publish for commit; the commit thread sends its reply. An invalid event is
    /// answered here, once the publishes before it have been.
    func publish(
        id: String?, stream: String, events: [JSONValue], key: String?, bytes: Int, session: Session, publishes: PublishWindow
    ) async {
        await publishes.begin(bytes: bytes)
        do {
            try broker.publishing.publish(stream: stream, events: events, key: key) { [self] result in
                switch result {
                case .success(let r): session.send(.published(id: id, stream: stream, epoch: r.epoch, seqs: r.seqs, duplicate: r.duplicate))
                case .failure(let error): reject(id: id, error, session: session)
                }
                publishes.end(bytes: bytes)
            }
        } catch {
            publishes.end(bytes: bytes)
            await publishes.drained()
            reject(id: id, error, session: session)
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
