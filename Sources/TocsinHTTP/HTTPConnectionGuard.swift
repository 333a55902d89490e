package import HTTPTypes
package import HummingbirdCore
package import Logging
package import NIOCore
package import NIOHTTP1
internal import NIOSSL
package import Metrics
import Synchronization
package import TocsinCore

/// Sits right after NIO's HTTP/1 request decoder on every connection and holds it to
/// `HTTPEdgeLimits`: a head and a body must arrive within their deadlines, an oversized or
/// malformed request gets the right status (400, 408, 414, 426, 431, 501, 505) with a JSON
/// error body, and the connection is then closed. Hummingbird alone leaves a connection that
/// never completes its first request open forever, and answers a parse error before the first
/// request with nothing.
///
/// The decisions are `StateMachine`'s; this handler only carries them out, on the channel's
/// event loop. Once a WebSocket upgrade is asked for, everything passes through untouched
/// (without unwrapping: after the upgrade raw bytes and WebSocket frames flow here).
package final class HTTPConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias InboundOut = HTTPServerRequestPart
    package typealias OutboundIn = HTTPServerResponsePart
    package typealias OutboundOut = HTTPServerResponsePart

    private var machine: StateMachine
    private var deadline: Scheduled<Void>?
    private var started = false
    private let overCapacity: Bool
    private let onReject: @Sendable (TocsinError) -> Void

    /// `onReject` is told of every answer the guard gives itself (for a metric). An
    /// `overCapacity` connection is answered 503 and closed as soon as it is active.
    package init(limits: HTTPEdgeLimits, overCapacity: Bool = false, onReject: @escaping @Sendable (TocsinError) -> Void = { _ in }) {
        self.machine = StateMachine(limits: limits)
        self.overCapacity = overCapacity
        self.onReject = onReject
    }

    /// The connection's request asked for a WebSocket upgrade (the guard then lets everything through).
    package var upgradeAsked: Bool { machine.phase == .passthrough }

    private func start(context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        run(machine.started(overCapacity: overCapacity), context: context) {}
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    package func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if machine.phase == .passthrough {
            context.fireChannelRead(data)
            return
        }
        let action: StateMachine.Action
        switch unwrapInboundIn(data) {
        case .head(let head):
            action = machine.receivedHead(
                .init(
                    uriBytes: head.uri.utf8.count, majorVersion: head.version.major,
                    webSocketUpgrade: head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" },
                    webSocketVersion: head.headers.first(name: "sec-websocket-version")))
        case .body:
            action = machine.receivedBodyPart()
        case .end:
            action = machine.receivedEnd()
        }
        run(action, context: context) { context.fireChannelRead(data) }
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if machine.phase == .passthrough {
            context.write(data, promise: promise)
            return
        }
        if case .end = unwrapOutboundIn(data) {
            apply(machine.sentResponseEnd(), context: context)
        }
        context.write(data, promise: promise)
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard machine.phase != .passthrough, let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        let kind: StateMachine.ParseError
        switch parseError {
        case .headerOverflow: kind = .headTooLarge
        case .invalidMethod: kind = .unknownMethod
        case .invalidVersion, .paused: kind = .badVersion
        default: kind = .malformed
        }
        run(machine.parseFailed(kind), context: context) {}
    }

    private func run(_ action: StateMachine.Action, context: ChannelHandlerContext, forward: () -> Void) {
        switch action {
        case .forward(let timer):
            apply(timer, context: context)
            forward()
        case .drop:
            break
        case .reject(let rejection):
            apply(.cancel, context: context)
            reject(rejection, context: context)
        }
    }

    private func apply(_ timer: StateMachine.Timer, context: ChannelHandlerContext) {
        switch timer {
        case .keep:
            return
        case .cancel:
            deadline?.cancel()
            deadline = nil
        case .start(let duration):
            deadline?.cancel()
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            deadline = context.eventLoop.scheduleTask(in: .nanoseconds(duration.nanoseconds)) {
                let (handler, context) = loopBound.value
                handler.deadline = nil
                handler.run(handler.machine.deadlinePassed(), context: context) {}
            }
        }
    }

    /// Writes the error response (the code's status, a JSON body, `Connection: close`), then closes.
    private func reject(_ rejection: StateMachine.Rejection, context: ChannelHandlerContext) {
        onReject(rejection.error)
        let status = rejection.error.code.httpStatus
        let body = ByteBuffer(
            string: JSONValue.object([
                "error": .object(["code": .string(rejection.error.code.rawValue), "message": .string(rejection.error.message)])
            ]).serialized)
        var head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: status.code, reasonPhrase: status.reasonPhrase))
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        for (name, value) in rejection.headers.sorted(by: { $0.key < $1.key }) { head.headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in loopBound.value.close(promise: nil) }
    }
}

/// A server child channel with `HTTPConnectionGuard` put right after the HTTP/1 decoder of
/// `Inner`'s pipeline (Hummingbird's HTTP/1 channel, with or without WebSocket upgrade), and
/// the server's open connections counted against `HTTPEdgeLimits.connectionLimit`. With `tls`,
/// a `NIOSSLServerHandler` on the source's current context comes first (as HummingbirdTLS's
/// `TLSChannel` puts it), then `TLSHandshakeDeadline` (the head timeout bounds the handshake).
package struct GuardedChildChannel<Inner: ServerChildChannel>: ServerChildChannel {
    /// The inner channel's value, and, with TLS, the handshake's outcome.
    package struct Value: ServerChildChannelValue {
        let inner: Inner.Value
        let handshake: EventLoopFuture<Void>?
        package var channel: any Channel { inner.channel }
    }
    let inner: Inner
    let limits: HTTPEdgeLimits
    let tls: TLSCertificateSource?
    let onReject: @Sendable (TocsinError) -> Void
    let connections: ConnectionCount

    package init(_ inner: Inner, limits: HTTPEdgeLimits, tls: TLSCertificateSource? = nil, onReject: @escaping @Sendable (TocsinError) -> Void) {
        self.inner = inner
        self.limits = limits
        self.tls = tls
        self.onReject = onReject
        self.connections = ConnectionCount(limit: limits.connectionLimit)
    }

    package func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let admitted = connections.admit()
        let connections = self.connections
        channel.closeFuture.whenComplete { _ in connections.release() }
        var handshake: EventLoopFuture<Void>?
        if let tls {
            let deadline = TLSHandshakeDeadline(timeout: limits.headTimeout, eventLoop: channel.eventLoop, onTimeout: onReject)
            handshake = deadline.handshake
            do {
                try channel.pipeline.syncOperations.addHandlers([NIOSSLServerHandler(context: tls.context), deadline])
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { [handshake] value in
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(
                HTTPConnectionGuard(limits: limits, overCapacity: !admitted, onReject: onReject), position: .after(decoder))
            return Value(inner: value, handshake: handshake)
        }
    }

    package func handle(value: Value, logger: Logger) async {
        // A connection whose TLS handshake failed (an untrusting client, a port scanner, the
        // deadline) is closed already: the HTTP layer still winds it down (its channel must be
        // finished), but quietly, or it would log each one's vanished request as an error.
        if let handshake = value.handshake {
            do {
                try await handshake.get()
            } catch {
                logger.debug("TLS handshake failed", metadata: ["error": "\(error)"])
                var quiet = logger
                quiet.logLevel = .critical
                await inner.handle(value: value.inner, logger: quiet)
                return
            }
        }
        await inner.handle(value: value.inner, logger: logger)
    }
}

/// The connections a server holds, against its limit.
package final class ConnectionCount: Sendable {
    private let open = Atomic<Int>(0)
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Counts a new connection; false when it is one too many (it still counts until it closes).
    func admit() -> Bool { open.add(1, ordering: .relaxed).newValue <= limit }

    func release() { open.subtract(1, ordering: .relaxed) }
}

extension HTTPEdgeLimits {
    /// Hummingbird's HTTP/1 decoder limits for these limits: the request line counts against
    /// the head (the guard then tells a long target, 414, from long headers, 431).
    package var decoderConfiguration: HTTP1Channel.Configuration.DecoderConfiguration {
        .init(maxHeaderFieldSize: maxHeadBytes, maxHeaderListSize: maxHeadBytes, maxHeaderFieldCount: maxHeaderCount)
    }
}

extension HTTPConnectionGuard {
    /// Counts an answer the guard gave itself, by error code (`tocsin_http_rejections_total`).
    package static let countRejection: @Sendable (TocsinError) -> Void = { error in
        Counter(label: "tocsin_http_rejections_total", dimensions: [("code", error.code.rawValue)]).increment()
    }
}

extension HTTPServerBuilder {
    /// A server whose connections are built by `make` and guarded by `HTTPConnectionGuard`.
    /// With `tls`, connections speak TLS with the source's current certificate.
    package static func guarded<Inner: ServerChildChannel>(
        limits: HTTPEdgeLimits, tls: TLSCertificateSource? = nil,
        _ make: @escaping @Sendable (@escaping HTTPChannelHandler.Responder) -> Inner
    ) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            GuardedChildChannel(make(responder), limits: limits, tls: tls, onReject: HTTPConnectionGuard.countRejection)
        }
    }

    /// Plain HTTP/1, guarded (over TLS with `tls`).
    package static func guardedHTTP1(limits: HTTPEdgeLimits, tls: TLSCertificateSource? = nil) -> HTTPServerBuilder {
        guarded(limits: limits, tls: tls) { responder in
            HTTP1Channel(responder: responder, configuration: .init(httpDecoderConfiguration: limits.decoderConfiguration))
        }
    }
}
