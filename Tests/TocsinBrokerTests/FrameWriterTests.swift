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
        FrameWriter(channel: channel).write(frames)
        let written = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        var expected = ByteBuffer()
        for frame in frames {
            var bytes = try Self.encodedByNIO(frame)
            expected.writeBuffer(&bytes)
        }
        #expect(written == expected)
    }

    /// The writer reuses its last buffer once NIO has let go of it. Bytes NIO still holds (not
    /// yet written) must never be overwritten by the next drain; a reused buffer must carry
    /// nothing of the previous one.
    @Test func aBufferIsReusedOnlyOnceNIOLetsGoOfIt() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        let writer = FrameWriter(channel: channel)
        func expected(_ frames: [OutFrame]) throws -> ByteBuffer {
            var all = ByteBuffer()
            for frame in frames {
                var bytes = try Self.encodedByNIO(frame)
                all.writeBuffer(&bytes)
            }
            return all
        }
        // Buffers of 1 KiB and more are kept (`FrameWriter.spareCapacities`): a busy connection's.
        let drains: [[OutFrame]] = [
            [.text(String(repeating: "a", count: 1200)), .text("b")],
            [.text(String(repeating: "c", count: 1100))],
            [.notify(prefix: "{\"d\":\"" + String(repeating: "d", count: 1100), suffix: "\"}")],
        ]
        func address(_ buffer: ByteBuffer?) -> UnsafeRawPointer? { buffer?.withUnsafeReadableBytes { $0.baseAddress } }
        // Held: the embedded channel keeps every write until it is read.
        for drain in drains { writer.write(drain) }
        var held: [UnsafeRawPointer?] = []
        for drain in drains {
            let written = try channel.readOutbound(as: ByteBuffer.self)
            #expect(written == (try expected(drain)))
            held.append(address(written))
        }
        #expect(Set(held.compactMap { $0 }).count == drains.count)
        // Let go of at once: each drain writes into the previous drain's buffer.
        var reused: Set<UnsafeRawPointer> = []
        for drain in drains + drains.reversed() {
            writer.write(drain)
            let written = try channel.readOutbound(as: ByteBuffer.self)
            #expect(written == (try expected(drain)))
            if let a = address(written) { reused.insert(a) }
        }
        #expect(reused.count == 1)
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
