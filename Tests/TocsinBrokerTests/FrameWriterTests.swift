import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing
@testable import TocsinBroker

/// The session writer encodes frames itself and hands the bytes to the pipeline below NIO's
/// encoder: its bytes must be exactly the encoder's, at every length boundary.
@Suite struct FrameWriterTests {
    static func encodedByNIO(_ frame: OutFrame) throws -> ByteBuffer {
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        try channel.writeOutbound(FrameWriter.webSocketFrame(frame, allocator: channel.allocator))
        var bytes = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
        return bytes
    }

    @Test(arguments: [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
    func aFrameIsByteForByteWhatNIOWouldWrite(length: Int) throws {
        let text = String(repeating: "é", count: length / 2) + String(repeating: "a", count: length % 2)
        let frames: [OutFrame] = [.text(text), .notify(prefix: #"{"type":"notify","subscription":"x""#, suffix: text)]
        for frame in frames {
            var ours = ByteBuffer()
            ours.writeTextFrame(frame)
            #expect(ours == (try Self.encodedByNIO(frame)))
        }
    }

    @Test func aDrainIsOneWriteOfEveryFrameInOrder() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        let frames: [OutFrame] = [.text("one"), .notify(prefix: "{\"a\":", suffix: "2}"), .text(String(repeating: "z", count: 300))]
        FrameWriter(channel: channel).write(Outbox(frames))
        let written = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        var expected = ByteBuffer()
        for frame in frames {
            var bytes = try Self.encodedByNIO(frame)
            expected.writeBuffer(&bytes)
        }
        #expect(written == expected)
    }

    /// The writers of one thread (an event loop's connections) reuse one buffer once NIO has
    /// let go of it. Bytes NIO still holds (not yet written) must never be overwritten by the
    /// next drain, of the same connection or another; a reused buffer must carry nothing of the
    /// previous one.
    @Test func aBufferIsReusedOnlyOnceNIOLetsGoOfIt() throws {
        func connected() throws -> EmbeddedChannel {
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
            try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
            return channel
        }
        let channels = [try connected(), try connected()]
        let writers = channels.map { FrameWriter(channel: $0) }
        func expected(_ frames: [OutFrame]) throws -> ByteBuffer {
            var all = ByteBuffer()
            for frame in frames {
                var bytes = try Self.encodedByNIO(frame)
                all.writeBuffer(&bytes)
            }
            return all
        }
        // One large frame (first: the buffer grows to it once), a notification alone, a busy
        // connection's batch.
        let drains: [[OutFrame]] = [
            [.text(String(repeating: "c", count: 40_000))],
            [.notify(prefix: "{\"d\":\"", suffix: "x\"}")],
            [.text(String(repeating: "a", count: 1200)), .text("b")],
            [.text("e")],
        ]
        func address(_ buffer: ByteBuffer?) -> UnsafeRawPointer? { buffer?.withUnsafeReadableBytes { $0.baseAddress } }
        // Held: the embedded channel keeps every write until it is read.
        for (i, drain) in drains.enumerated() { writers[i % 2].write(Outbox(drain)) }
        var held: [UnsafeRawPointer?] = []
        for (i, drain) in drains.enumerated() {
            let written = try channels[i % 2].readOutbound(as: ByteBuffer.self)
            #expect(written == (try expected(drain)))
            held.append(address(written))
        }
        #expect(Set(held.compactMap { $0 }).count == drains.count)
        // Let go of at once: each drain, of either connection, writes into the previous drain's
        // buffer (once it has grown to the largest).
        var reused: Set<UnsafeRawPointer> = []
        for (i, drain) in (drains + drains.reversed()).enumerated() {
            writers[i % 2].write(Outbox(drain))
            let written = try channels[i % 2].readOutbound(as: ByteBuffer.self)
            #expect(written == (try expected(drain)))
            if let a = address(written) { reused.insert(a) }
        }
        #expect(reused.count == 1)
    }

    /// A buffer past `FrameWriter.maxKeptCapacity` (one huge frame's) is not kept.
    @Test func aHugeBufferIsNotKept() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        let writer = FrameWriter(channel: channel)
        writer.write([.text(String(repeating: "h", count: FrameWriter.maxKeptCapacity + 1))])
        // Read and dropped: had the writer kept the buffer, it would now be the only holder and reuse it.
        #expect(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes ?? 0 > FrameWriter.maxKeptCapacity)
        writer.write([.text("small")])
        let small = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: small).hasSuffix("small"))
        #expect(small.capacity <= FrameWriter.maxKeptCapacity)
    }

    @Test func withoutAnEncoderFramesTakeThePipeline() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        FrameWriter(channel: channel).write([.text("a"), .text("b")])
        let first = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        let second = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(String(buffer: first.data) == "a")
        #expect(String(buffer: second.data) == "b")
    }
}
