internal import NIOCore
internal import NIOSSL
import NIOTLS
internal import TocsinCore

/// Closes a TLS connection whose handshake has not completed within `timeout` of its start. It
/// sits right after `NIOSSLServerHandler`: until the handshake completes, nothing reaches the
/// HTTP layer, and what `HTTPConnectionGuard` writes on its own head deadline waits in the TLS
/// handler unsent (so its close would never come). A peer that opens TCP and never speaks TLS,
/// or stalls halfway, is closed here instead. It removes itself once the handshake is done.
final class TLSHandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: Duration
    private let onTimeout: @Sendable (TocsinError) -> Void
    private var deadline: Scheduled<Void>?
    private let completed: EventLoopPromise<Void>
    private var settled = false
    /// Succeeds when the handshake completes; fails when the connection closes before.
    let handshake: EventLoopFuture<Void>

    /// `onTimeout` is told of each connection closed here (for the rejections metric).
    init(timeout: Duration, eventLoop: any EventLoop, onTimeout: @escaping @Sendable (TocsinError) -> Void) {
        self.timeout = timeout
        self.onTimeout = onTimeout
        completed = eventLoop.makePromise()
        handshake = completed.futureResult
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancel()
        settle(.failure(ChannelError.inputClosed))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancel()
        settle(.failure(ChannelError.inputClosed))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if case .handshakeCompleted = event as? TLSUserEvent {
            cancel()
            settle(.success(()))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    private func arm(context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let timeout = self.timeout
        deadline = context.eventLoop.scheduleTask(in: .nanoseconds(timeout.nanoseconds)) {
            let (handler, context) = loopBound.value
            handler.deadline = nil
            handler.onTimeout(TocsinError(.timeout, "no TLS handshake within \(HTTPConnectionGuard.StateMachine.seconds(timeout))"))
            context.close(promise: nil)
        }
    }

    private func settle(_ outcome: Result<Void, any Error>) {
        guard !settled else { return }
        settled = true
        completed.completeWith(outcome)
    }

    private func cancel() {
        deadline?.cancel()
        deadline = nil
    }
}
