import NIOCore

/// RFC 6455 §5.1: a server must close the connection (1002) on a client frame that is not
/// masked. NIO's frame decoder accepts both, and the WebSocket layer above it does not say which
/// it got, so this handler reads the frame headers in the raw byte stream, first in the
/// pipeline, and closes on the first unmasked one. It is added when the upgrade is accepted,
/// before the 101 reply, so it sees every frame a client sends after the handshake as RFC 6455
/// §4.1 requires (bytes a client sends before the 101 arrives are not checked).
final class ClientFrameMaskCheck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private var scanner = Scanner()
    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        if scanner.scan(buffer.readableBytesView) {
            context.fireChannelRead(data)
            return
        }
        failed = true
        var close = context.channel.allocator.buffer(capacity: 32)
        let reason = "client frames must be masked"
        close.writeInteger(UInt8(0x88))  // FIN + close
        close.writeInteger(UInt8(2 + reason.utf8.count))
        close.writeInteger(UInt16(1002))
        close.writeString(reason)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(NIOAny(close)).whenComplete { _ in loopBound.value.close(promise: nil) }
    }

    /// Follows frame boundaries through the byte stream, across reads.
    struct Scanner: Equatable {
        /// Header bytes of the current frame read so far (at most 14).
        private var header: [UInt8] = []
        /// Payload bytes of the current frame still to skip.
        private var remaining: UInt64 = 0

        /// Reads `bytes`; false once a frame header without the mask bit is seen.
        mutating func scan<C: Collection<UInt8>>(_ bytes: C) -> Bool {
            var index = bytes.startIndex
            while index != bytes.endIndex {
                if remaining > 0 {
                    let available = UInt64(bytes.distance(from: index, to: bytes.endIndex))
                    let skip = min(remaining, available)
                    index = bytes.index(index, offsetBy: Int(skip))
                    remaining -= skip
                    continue
                }
                header.append(bytes[index])
                index = bytes.index(after: index)
                guard header.count >= 2 else { continue }
                if header[1] & 0x80 == 0 { return false }
                let short = header[1] & 0x7F
                let lengthBytes = short == 126 ? 2 : short == 127 ? 8 : 0
                guard header.count == 2 + lengthBytes + 4 else { continue }
                var length = UInt64(short)
                if lengthBytes > 0 {
                    length = header[2..<(2 + lengthBytes)].reduce(0) { $0 << 8 | UInt64($1) }
                }
                header.removeAll(keepingCapacity: true)
                remaining = length
            }
            return true
        }
    }
}
