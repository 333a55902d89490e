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

    func register(on router: Router<TocsinRequestContext>) {
        router.ws("/v1/ws") { _, _ in
            .upgrade([:])
        } onUpgrade: { inbound, _, context in
            await self.serve(inbound: inbound, channel: context.requestContext.channel, logger: context.logger)
        }
    }

    func serve(inbound: WebSocketInboundStream, channel: any Channel, logger: Logger) async {
        let sessionID = "ws-" + UUID().uuidString.lowercased().prefix(13)
        var logger = logger
        logger[metadataKey: "session"] = "\(sessionID)"
        let configuration = broker.configuration
        let metrics = broker.metrics
        let broker = self.broker
        let writer = NIOLoopBoundBox.makeBoxSendingValue(FrameWriter(channel: channel), eventLoop: channel.eventLoop)
        let session = Session(
            id: String(sessionID), maxQueuedFrames: configuration.maxQueuedFrames, logger: logger, eventLoop: channel.eventLoop
        ) { session in
            Self.drain(session, to: channel, writer: writer.value, maxBufferedBytes: configuration.maxBufferedBytes, broker: broker)
        }
        let publishes = PublishWindow(
            capacity: max(configuration.maxPipelinedPublishes, 1), byteCapacity: max(configuration.maxPipelinedPublishBytes, 0),
            budget: broker.publishBudget)
        metrics.sessionsOpened.increment()
        broker.opened(session)
        await withDiscardingTaskGroup { group in
            do {
                // The transport limit is above the protocol limit, so an oversized message
                // can be answered with `too_large` instead of a dropped connection.
                for try await message in inbound.messages(maxSize: configuration.maxMessageBytes * 4) {
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
            }
            await broker.closed(session: session)
            metrics.sessionsClosed.increment()
            group.cancelAll()
        }
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
                try broker.ack(session: session, subscription: subscription, seq: seq)
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
                let (welcome, replays) = try await broker.hello(session: session, client: client)
                guard case .welcome(_, let s, let b, let c, let subs) = welcome else { return [] }
                session.send(.welcome(id: id, session: s, broker: b, client: c, subscriptions: subs))
                return replays
            case .subscribe(let id, let channel, let params, let from):
                let (info, replay) = try await broker.subscribe(session: session, channel: channel, params: params, from: from)
                session.send(.subscribed(id: id, info))
                return replay.map { [$0] } ?? []
            case .unsubscribe(let id, let subscription):
                try await broker.unsubscribe(session: session, subscription: subscription)
                session.send(.unsubscribed(id: id, subscription: subscription))
            case .publish, .ack:
                break  // handled above, without waiting for earlier publishes
            case .fetch(let id, let subscription, let after, let limit):
                guard let client = session.client else { throw TocsinError(.notIdentified, "send hello first") }
                let fetched = try await broker.fetch(subscription: subscription, client: client, after: after, limit: limit)
                guard case .fetched(_, let sub, let events, let seq) = fetched else { return [] }
                session.send(.fetched(id: id, subscription: sub, events: events, seq: seq))
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
            try broker.publish(stream: stream, events: events, key: key) { [self] result in
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

    /// Writes everything the session has queued to its socket, on the channel's event loop:
    /// one buffer and one flush per batch. Runs until the outbox is empty.
    static func drain(_ session: Session, to channel: any Channel, writer: FrameWriter, maxBufferedBytes: Int, broker: Broker) {
        while true {
            switch session.take() {
            case .frames(let frames):
                writer.write(frames)
                // Asking for the buffered bytes costs more than the write: only once NIO's own
                // (much lower) high-water mark says the socket is falling behind.
                if !channel.isWritable, let buffered = try? channel.syncOptions?.getOption(.bufferedWritableBytes), buffered > maxBufferedBytes {
                    session.overflowed()
                }
            case .idle, .finished:
                return
            case .close(.migrationTimedOut):
                session.logger.info("closing a client that did not follow its migrate order")
                close(channel, code: .goingAway, reason: "migrate")
                return
            case .close(.slowConsumer):
                broker.metrics.slowConsumers.increment()
                broker.slowConsumerDisconnects.add(1, ordering: .relaxed)
                session.logger.warning("disconnecting slow consumer")
                let notice = ServerMessage.error(
                    id: nil,
                    TocsinError(.slowConsumer, "too many undelivered notifications; reconnect and resume from your last acknowledged position"))
                channel.write(FrameWriter.webSocketFrame(.text(notice.encoded), allocator: channel.allocator), promise: nil)
                close(channel, code: .policyViolation, reason: "slow consumer")
                return
            }
        }
    }

    /// Sends a close frame with `code` and `reason`, then closes the connection.
    static func close(_ channel: any Channel, code: WebSocketErrorCode, reason: String) {
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data), promise: nil)
        channel.close(promise: nil)
    }
}

/// The request context of every route: Hummingbird's basics, WebSocket upgrade support, and the
/// connection's channel (a WebSocket session writes its frames to it directly).
struct TocsinRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<TocsinRequestContext>
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.channel = source.channel
    }
}
