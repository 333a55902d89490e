import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import TocsinCore
import TocsinHTTP

/// A broker's connection: HTTP/1, which may upgrade to a WebSocket at /v1/ws. Hummingbird serves
/// the HTTP requests on the connection's task; an upgraded connection hands its pipeline to a
/// `WebSocketConnection` handler and its task ends (an idle WebSocket holds no task).
///
/// Modelled on hummingbird-websocket's `HTTP1WebSocketUpgradeChannel`, which keeps a task per
/// WebSocket for its whole life. An upgrade refused (no such path, a disallowed `Origin`, a bad
/// token) goes on as a plain request, which the router answers with the reason (`GET /v1/ws`).
struct BrokerChildChannel: ServerChildChannel, HTTPChannelHandler {
    enum Connection: Sendable {
        /// Upgraded: the WebSocket lives in the pipeline.
        case webSocket
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// An upgrade refused: answered with why, then closed. (Its request head was consumed
        /// deciding, so the router cannot answer it.)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, TocsinError)
    }

    struct Value: ServerChildChannelValue {
        let connection: EventLoopFuture<Connection>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let endpoint: WebSocketEndpoint
    let http1: HTTP1Channel.Configuration
    /// The largest WebSocket frame, and message assembled from fragments (1009 beyond).
    let maxFrameSize: Int

    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Reads start small: a connection keeps its receive buffer between reads, and most
            // are idle subscribers (NIO's default starts at 2 KiB; it still grows for big reads).
            try channel.syncOptions?.setOption(.recvAllocator, value: Self.receiveBuffers)
            // The upgrade's decision: the token's grant for the connection it opens, or the refusal.
            let granted = NIOLoopBoundBox<Grant??>(nil, eventLoop: channel.eventLoop)
            let refused = NIOLoopBoundBox<TocsinError?>(nil, eventLoop: channel.eventLoop)
            let endpoint = self.endpoint
            let upgrader = NIOTypedWebSocketServerUpgrader<Connection>(
                maxFrameSize: maxFrameSize,
                // `WebSocketConnection` answers the decoder's errors (one handler fewer per connection).
                enableAutomaticErrorHandling: false,
                shouldUpgrade: { channel, head in
                    let promise = channel.eventLoop.makePromise(of: Result<(headers: HTTPFields, grant: Grant?), TocsinError>.self)
                    promise.completeWithTask {
                        guard let request = try? HTTPRequest(head, secure: false, splitCookie: false) else {
                            return .failure(TocsinError(.badRequest, "a malformed upgrade request"))
                        }
                        return await endpoint.decideUpgrade(Request(head: request, body: .init(buffer: ByteBuffer())))
                    }
                    return promise.futureResult.flatMapThrowing { decision -> HTTPHeaders? in
                        let accepted: (headers: HTTPFields, grant: Grant?)
                        switch decision {
                        case .success(let a): accepted = a
                        case .failure(let error):
                            refused.value = error
                            return nil
                        }
                        granted.value = .some(accepted.grant)
                        return HTTPHeaders(accepted.headers.map { ($0.name.rawName, $0.value) })
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let grant = granted.value else { throw TocsinError(.internalError, "an upgrade that was not granted") }
                        let operations = channel.pipeline.syncOperations
                        // The HTTP edge's guard has nothing left to guard (it passes everything through now).
                        if let guardHandler = try? operations.handler(type: HTTPConnectionGuard.self) {
                            operations.removeHandler(guardHandler, promise: nil)
                        }
                        try operations.addHandler(WebSocketConnection(endpoint: endpoint, grant: grant, logger: logger))
                        return .webSocket
                    }
                }
            )
            let http1 = self.http1
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Connection>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let operations = channel.pipeline.syncOperations
                        try operations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try operations.addHandlers(http1.additionalChannelHandlers())
                        try operations.addHandler(HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        // An upgrade asked for and not made: the decision's reason, or NIO's
                        // (no Sec-WebSocket-Key, no `Connection: Upgrade`, …).
                        if let error = refused.value { return .refused(http, error) }
                        if (try? operations.handler(type: HTTPConnectionGuard.self))?.upgradeAsked == true {
                            return .refused(
                                http,
                                TocsinError(
                                    .badRequest,
                                    "not a valid WebSocket upgrade: RFC 6455 §4.2.1 asks for Connection: Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version: 13"
                                ))
                        }
                        return .http(http)
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Connection>(upgradeConfiguration: upgrade)
            configuration.enablePipelining = false  // HTTP is pipelined by NIOAsyncChannel
            configuration.enableErrorHandling = false  // HTTPConnectionGuard answers parse errors
            configuration.enableResponseHeaderValidation = false  // Swift HTTP Types validate them
            configuration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            configuration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            configuration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let connection = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            return Value(connection: connection, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.connection.get() {
            case .webSocket:
                return
            case .http(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let error):
                try await Self.answer(http, with: error)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("the connection closed before its first request")
        } catch {
            logger.debug("the connection failed before its first request", metadata: ["error": "\(error)"])
        }
    }

    /// Writes `error` as the response (`Connection: close`) and closes.
    static func answer(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, with error: TocsinError) async throws {
        let body = ByteBuffer(string: error.jsonBody)
        var head = HTTPResponse(status: error.code.httpStatus, headerFields: error.response.headers)
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.connection] = "close"
        try await http.executeThenClose { _, outbound in
            try await outbound.write(contentsOf: [.head(head), .body(body), .end(nil)])
        }
    }
}
