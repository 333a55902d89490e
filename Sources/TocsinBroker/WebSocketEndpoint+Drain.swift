import Logging
import NIOCore
import NIOWebSocket
import TocsinCore

/// The write side of a WebSocket session: its outbox drained to the socket, and closing with a code.
extension WebSocketEndpoint {
    /// Writes everything the session has queued to its socket, on the channel's event loop:
    /// one buffer and one flush per batch. Runs until the outbox is empty.
    static func drain(_ session: Session, to channel: any Channel, writer: FrameWriter, broker: Broker) {
        var buffered: Int? = nil
        while true {
            switch session.take(transportBuffered: buffered) {
            case .frames(let frames):
                writer.write(frames)
                // Asking for the buffered bytes costs more than the write: only once NIO's own
                // (much lower) high-water mark says the socket is falling behind.
                buffered = channel.isWritable ? 0 : try? channel.syncOptions?.getOption(.bufferedWritableBytes)
            case .idle, .finished:
                return
            case .close(.migrationTimedOut):
                session.logger.info("closing a client that did not follow its migrate order")
                close(channel, code: .goingAway, reason: "migrate")
                return
            case .close(.slowConsumer):
                broker.metrics.slowConsumers.increment()
                broker.slowConsumerDisconnects.add(1, ordering: .relaxed)
                session.logger.warning("disconnecting slow consumer", metadata: ["maxOutboundBytes": "\(session.maxOutboundBytes)"])
                let notice = ServerMessage.error(
                    id: nil,
                    TocsinError(.slowConsumer, "too many undelivered notifications; reconnect and resume from your last acknowledged position"))
                close(channel, code: .policyViolation, reason: "slow consumer", after: notice, grace: broker.configuration.closeGrace)
                return
            case .close(.silent):
                let notice = ServerMessage.error(
                    id: nil,
                    TocsinError(
                        .timeout,
                        "no message within \(broker.configuration.firstMessageTimeout.milliseconds / 1000) s of connecting; send hello first"))
                close(channel, code: .policyViolation, reason: "timeout", after: notice, grace: broker.configuration.closeGrace)
                return
            case .close(.unauthenticated):
                let seconds = broker.configuration.firstMessageTimeout.milliseconds / 1000
                let notice = ServerMessage.error(
                    id: nil, TocsinError(.unauthorized, "no valid token within \(seconds) s of connecting; send hello with a token"))
                close(channel, code: tokenCloseCode, reason: "unauthorized", after: notice, grace: broker.configuration.closeGrace)
                return
            case .close(.tokenExpired):
                let notice = ServerMessage.error(id: nil, TocsinError(.tokenExpired, "the connection's token expired and no refresh came"))
                close(channel, code: tokenCloseCode, reason: "token expired", after: notice, grace: broker.configuration.closeGrace)
                return
            }
        }
    }

    /// The close code of a connection without a valid token (HTTP's 401, in the private range).
    static let tokenCloseCode = WebSocketErrorCode(codeNumber: 4401)

    /// Sends a close frame with `code` and `reason` (after `notice`, if any) behind whatever is
    /// already queued for the socket, then closes the connection once they are written, or after
    /// `grace` if the peer does not read them (closing at once would cut a frame in half).
    static func close(_ channel: any Channel, code: WebSocketErrorCode, reason: String, after notice: ServerMessage? = nil, grace: Duration = .zero) {
        if let notice {
            channel.write(FrameWriter.webSocketFrame(.text(notice.encoded), allocator: channel.allocator), promise: nil)
        }
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        let written = channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(grace.nanoseconds)) { channel.close(promise: nil) }
        written.whenComplete { _ in
            deadline.cancel()
            channel.close(promise: nil)
        }
    }
}
