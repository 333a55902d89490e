import NIOCore
import NIOPosix
import NIOWebSocket

/// Writes a session's queued frames to its WebSocket connection: every frame of a drain is
/// encoded (header and payload) into one buffer, which goes to the socket as one write.
///
/// The buffer enters the pipeline at NIO's `WebSocketFrameEncoder`, as if that encoder had
/// produced it, so it skips the handlers above (Hummingbird's async channel, the encoder
/// itself) and their per-frame boxing, and the socket gets one contiguous buffer instead of a
/// header and a payload per frame. This is only right because server frames are never masked
/// and the connection negotiates no extension (no permessage-deflate): the bytes are exactly
/// what the encoder would write. Other writes on the connection (pongs, close frames) still go
/// through the encoder; all writes happen on the channel's event loop, so whole frames never
/// interleave.
///
/// Lives on the channel's event loop (see `NIOLoopBound` at its one use).
final class FrameWriter {
    private let channel: any Channel
    /// The encoder's context, looked up on first use; nil when the pipeline has no encoder
    /// (then frames take the ordinary path through the whole pipeline).
    private var encoderContext: ChannelHandlerContext?
    private var lookedUp = false

    /// The buffer every drain on this thread (an event loop's: all its connections) encodes
    /// into. Once the socket has taken a drain's bytes (usually within the write) NIO lets go
    /// of them and the next drain writes into the same memory instead of allocating; while NIO
    /// still holds them, `clear` gives the next drain fresh storage, so no bytes are shared.
    /// One per thread, not per connection: an idle subscriber holds no buffer.
    private static let scratch = ThreadSpecificVariable<Scratch>()
    /// The largest buffer kept for reuse; one huge frame's is let go.
    static let maxKeptCapacity = 64 << 10

    /// A thread's reusable buffer. Touched only by its own thread (`ThreadSpecificVariable`).
    private final class Scratch: @unchecked Sendable {
        var buffer: ByteBuffer?
    }

    init(channel: any Channel) {
        self.channel = channel
    }

    /// Writes and flushes `frames` in order. Must run on the channel's event loop.
    func write(_ frames: Outbox) {
        if !lookedUp {
            encoderContext = try? channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
            lookedUp = true
        }
        guard let context = encoderContext else {
            for frame in frames {
                channel.write(Self.webSocketFrame(frame, allocator: channel.allocator), promise: nil)
            }
            channel.flush()
            return
        }
        let size = frames.payloadBytes + frames.count * WebSocketText.maxHeaderSize
        let scratch = Self.scratch.currentValue ?? Self.newScratch()
        var buffer = scratch.buffer.take() ?? channel.allocator.buffer(capacity: size)
        buffer.clear(minimumCapacity: size)
        for frame in frames { buffer.writeTextFrame(frame) }
        // A context removed from the pipeline (the connection closed) fails the write; nothing else happens.
        context.writeAndFlush(NIOAny(buffer), promise: nil)
        if buffer.capacity <= Self.maxKeptCapacity { scratch.buffer = buffer }
    }

    private static func newScratch() -> Scratch {
        let scratch = Scratch()
        Self.scratch.currentValue = scratch
        return scratch
    }

    static func webSocketFrame(_ frame: OutFrame, allocator: ByteBufferAllocator) -> WebSocketFrame {
        var buffer = allocator.buffer(capacity: frame.payloadSize)
        frame.writePayload(into: &buffer)
        return WebSocketFrame(fin: true, opcode: .text, data: buffer)
    }
}

extension OutFrame {
    /// The payload's length in bytes.
    var payloadSize: Int {
        switch self {
        case .text(let text): text.utf8.count
        case .notify(let prefix, let suffix): prefix.utf8.count + suffix.utf8.count
        }
    }

    func writePayload(into buffer: inout ByteBuffer) {
        switch self {
        case .text(let text):
            buffer.writeString(text)
        case .notify(let prefix, let suffix):
            buffer.writeString(prefix)
            buffer.writeString(suffix)
        }
    }
}

/// The wire form of an unmasked, final text frame (RFC 6455 §5.2).
enum WebSocketText {
    /// Opcode byte, length byte, and at most an 8-byte extended length.
    static let maxHeaderSize = 10
}

extension ByteBuffer {
    /// Appends `frame` as one complete, unmasked, final text frame.
    mutating func writeTextFrame(_ frame: OutFrame) {
        let length = frame.payloadSize
        writeInteger(UInt8(0x81))  // FIN + text
        switch length {
        case ..<126:
            writeInteger(UInt8(length))
        case ...Int(UInt16.max):
            writeInteger(UInt8(126))
            writeInteger(UInt16(length))
        default:
            writeInteger(UInt8(127))
            writeInteger(UInt64(length))
        }
        frame.writePayload(into: &self)
    }
}
