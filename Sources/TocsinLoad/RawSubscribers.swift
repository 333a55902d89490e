import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// What the raw subscribers of a latency benchmark gathered: latencies of the events published
/// inside the measured window, deliveries, subscriptions made.
public final class LatencySamples: Sendable {
    let latencies = Mutex<[Int64]>([])
    let delivered = Atomic<Int>(0)
    let subscribed = Atomic<Int>(0)
    /// Connections whose WebSocket upgrade was accepted.
    let upgraded = Atomic<Int>(0)
    /// Error replies the broker sent (hello or subscribe refused, a connection ended by the
    /// broker), and the first few of them, so a run that falls short says why.
    let errors = Atomic<Int>(0)
    let firstErrors = Mutex<[String]>([])
    /// Set when the subscribers should close on their next notification.
    let stop = Atomic<Bool>(false)
    /// The measured window, in the monotonic nanoseconds events carry: an event counts when
    /// it was published inside it (so late deliveries of warm-up events do not).
    let windowStart = Atomic<Int64>(.max)
    let windowEnd = Atomic<Int64>(.max)

    public init() {}

    func inWindow(_ sent: Int64) -> Bool {
        sent >= windowStart.load(ordering: .relaxed) && sent < windowEnd.load(ordering: .relaxed)
    }

    func recordError(_ frame: String) {
        errors.add(1, ordering: .relaxed)
        firstErrors.withLock { if $0.count < 3 { $0.append(frame) } }
    }

    /// "n error replies, the first: …", or nil when there were none.
    public var errorSummary: String? {
        let count = errors.load(ordering: .relaxed)
        guard count > 0 else { return nil }
        return "\(count) error replies, the first: " + firstErrors.withLock { $0.joined(separator: "; ") }
    }
}

/// A latency benchmark's subscribers: raw WebSocket connections on one event-loop thread,
/// frames parsed in place from the socket's buffer, no task or `String` per notification.
///
/// The load generator shares the machine with the broker it measures; a client that spends
/// more CPU per notification than the broker does (a general-purpose WebSocket client does)
/// would measure its own queueing, not the broker's latency. This one speaks just enough of
/// the protocol: the upgrade, `hello`, `subscribe`, `notify`, cumulative `ack`s, `ping`.
struct RawSubscribers {
    let group: MultiThreadedEventLoopGroup
    let channels: [any Channel]

    /// Connects `count` subscribers of `EmergenciesOfKind(kind)` to the broker at `host:port`.
    static func connect(
        host: String, port: Int, count: Int, kind: String, ackEvery: Int, samples: LatencySamples, parallel: Int = 1
    ) async throws -> RawSubscribers {
        try await connect(
            host: host, port: port, count: count, client: { "\(kind)-\($0)" },
            subscribe: { _ in #"{"type":"subscribe","id":"s","channel":"EmergenciesOfKind","params":{"kind":"\#(kind)"}}"# },
            fetch: false, ackEvery: ackEvery, samples: samples, parallel: parallel)
    }

    /// Loopback connections to one port run out of source ports at about 28,000 (the
    /// ephemeral range); beyond that each connection binds a source address of its own among
    /// 127.0.0.2, 127.0.0.3, … (all loopback).
    static let connectionsPerSourceAddress = 25_000

    /// Connects `count` subscribers, the `i`th saying hello as `client(i)` and sending
    /// `subscribe(i)`. With `fetch`, each answers a notification with a `fetch` of what it has
    /// not fetched yet (one at a time), counts the events it gets and acks them.
    /// `parallel`: connections being opened at once (many thousands open faster that way).
    static func connect(
        host: String, port: Int, count: Int, client: @escaping @Sendable (Int) -> String, subscribe: @escaping @Sendable (Int) -> String,
        fetch: Bool, ackEvery: Int, samples: LatencySamples, parallel: Int = 1
    ) async throws -> RawSubscribers {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let spread = host == "127.0.0.1" && count > connectionsPerSourceAddress
        func open(_ i: Int) async throws -> any Channel {
            let (name, frame) = (client(i), subscribe(i))
            var bootstrap = ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                // Notifications are small: no 2 KiB first read buffer per idle connection.
                .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            RawSubscriberHandler(
                                host: "\(host):\(port)", client: name, subscribe: frame, fetch: fetch, ackEvery: ackEvery, samples: samples))
                    }
                }
            if spread { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: "127.0.0.\(2 + i / connectionsPerSourceAddress)", port: 0)) }
            return try await bootstrap.connect(host: host, port: port).get()
        }
        var channels: [any Channel] = []
        channels.reserveCapacity(count)
        do {
            try await withThrowingTaskGroup(of: (any Channel).self) { tasks in
                var next = 0
                while next < min(parallel, count) {
                    let i = next
                    tasks.addTask { try await open(i) }
                    next += 1
                }
                while let channel = try await tasks.next() {
                    channels.append(channel)
                    if next < count {
                        let i = next
                        tasks.addTask { try await open(i) }
                        next += 1
                    }
                }
            }
        } catch {
            for channel in channels { channel.close(promise: nil) }
            try? await group.shutdownGracefully()
            throw error
        }
        return RawSubscribers(group: group, channels: channels)
    }

    /// Closes every connection (each hands its samples over as it closes) and stops the thread.
    func close() async throws {
        for channel in channels { channel.close(promise: nil) }
        for channel in channels { try? await channel.closeFuture.get() }
        try await group.shutdownGracefully()
    }
}

/// One subscriber connection (see `RawSubscribers`).
final class RawSubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let host: String
    private let client: String
    private let subscribeFrame: String
    private let fetches: Bool
    /// Fetch mode: the seq fetched up to, whether a fetch is out, and whether a notification
    /// came while it was.
    private var fetchedUpTo: Int64 = 0
    private var fetching = false
    private var notifiedMeanwhile = false
    private let ackEvery: Int
    private let samples: LatencySamples
    private var upgraded = false
    private var buffer = ByteBuffer()
    private var subscription = ""
    private var received = 0
    private var latencies: [Int64] = []

    init(host: String, client: String, subscribe: String, fetch: Bool, ackEvery: Int, samples: LatencySamples) {
        self.host = host
        self.client = client
        self.subscribeFrame = subscribe
        self.fetches = fetch
        self.ackEvery = ackEvery
        self.samples = samples
    }

    func channelActive(context: ChannelHandlerContext) {
        let request =
            "GET /v1/ws HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        context.write(wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
        // An empty client or subscribe frame: a connection that stops before that step.
        if !client.isEmpty { send(#"{"type":"hello","id":"h","client":"\#(client)"}"#, context: context) }
        if !subscribeFrame.isEmpty { send(subscribeFrame, context: context) }
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        if !upgraded {
            guard let end = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let head = buffer.readString(length: end.upperBound - buffer.readerIndex) ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else {
                print("subscriber \(client): upgrade refused: \(head.prefix { $0 != "\r" })")
                context.close(promise: nil)
                return
            }
            upgraded = true
            samples.upgraded.add(1, ordering: .relaxed)
        }
        var wroteSomething = false
        while let (opcode, payload) = nextFrame() {
            switch opcode {
            case 0x1:
                if handleText(payload, context: context) { wroteSomething = true }
            case 0x9:
                sendFrame(opcode: 0xA, payload: payload, context: context)
                wroteSomething = true
            case 0x8:
                context.close(promise: nil)
                return
            default:
                break
            }
        }
        buffer.discardReadBytes()
        if wroteSomething { context.flush() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let inWindow = latencies.count
        samples.latencies.withLock { $0 += latencies }
        samples.delivered.add(inWindow, ordering: .relaxed)
        latencies = []
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// The next complete frame (server frames are unmasked and, from Tocsin, unfragmented).
    private func nextFrame() -> (opcode: UInt8, payload: ByteBuffer)? {
        let start = buffer.readerIndex
        guard let b0 = buffer.getInteger(at: start, as: UInt8.self), let b1 = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        var headerSize = 2
        var length = Int(b1 & 0x7F)
        if length == 126 {
            guard let l = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(l)
            headerSize = 4
        } else if length == 127 {
            guard let l = buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            length = Int(l)
            headerSize = 10
        }
        guard buffer.readableBytes >= headerSize + length else { return nil }
        buffer.moveReaderIndex(forwardBy: headerSize)
        let payload = buffer.readSlice(length: length)!
        return (b0 & 0x0F, payload)
    }

    /// Records a notification's latency and acks every `ackEvery`; true when it wrote an ack.
    private func handleText(_ payload: ByteBuffer, context: ChannelHandlerContext) -> Bool {
        let now = Monotonic.nanos()
        let view = payload.readableBytesView
        if fetches {
            if view.starts(with: Self.notifyPrefix) {
                guard !fetching else {
                    notifiedMeanwhile = true
                    return false
                }
                sendFetch(context: context)
                return true
            }
            if view.starts(with: Self.fetchedPrefix) {
                fetching = false
                let seq = FrameScan.number(after: Self.seqPattern, in: view) ?? fetchedUpTo
                let events = FrameScan.count(Self.eventPattern, in: view)
                samples.delivered.add(events, ordering: .relaxed)
                if seq > fetchedUpTo {
                    fetchedUpTo = seq
                    send(#"{"type":"ack","subscription":"\#(subscription)","seq":\#(seq)}"#, context: context)
                }
                if notifiedMeanwhile {
                    notifiedMeanwhile = false
                    sendFetch(context: context)
                }
                return true
            }
        }
        if view.starts(with: Self.notifyPrefix) {
            guard let sent = FrameScan.number(after: FrameScan.sentPattern, in: view) else { return false }
            received += 1
            if samples.inWindow(sent) { latencies.append(now - sent) }
            if samples.stop.load(ordering: .relaxed) {
                context.close(promise: nil)
                return false
            }
            guard received % ackEvery == 0, let seq = FrameScan.number(after: Self.seqPattern, in: view) else { return false }
            send(#"{"type":"ack","subscription":"\#(subscription)","seq":\#(seq)}"#, context: context)
            return true
        }
        if view.starts(with: Self.subscribedPrefix) {
            subscription = FrameScan.field(String(buffer: payload), "subscription") ?? ""
            samples.subscribed.add(1, ordering: .relaxed)
        } else if view.starts(with: Self.errorPrefix) {
            samples.recordError(String(buffer: payload))
        }
        return false
    }

    private func sendFetch(context: ChannelHandlerContext) {
        fetching = true
        send(#"{"type":"fetch","id":"f","subscription":"\#(subscription)","after":\#(fetchedUpTo),"limit":1000}"#, context: context)
    }

    private func send(_ text: String, context: ChannelHandlerContext) {
        sendFrame(opcode: 0x1, payload: ByteBuffer(string: text), context: context)
    }

    /// A client frame: masked, as RFC 6455 requires of clients.
    private func sendFrame(opcode: UInt8, payload: ByteBuffer, context: ChannelHandlerContext) {
        var frame = ByteBuffer()
        frame.reserveCapacity(payload.readableBytes + 14)
        frame.writeInteger(0x80 | opcode)
        let length = payload.readableBytes
        if length < 126 {
            frame.writeInteger(UInt8(0x80 | length))
        } else {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(length))
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame.writeBytes(mask)
        for (i, byte) in payload.readableBytesView.enumerated() { frame.writeInteger(byte ^ mask[i & 3]) }
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    private static let notifyPrefix = Array(#"{"type":"notify""#.utf8)
    private static let subscribedPrefix = Array(#"{"type":"subscribed""#.utf8)
    private static let errorPrefix = Array(#"{"type":"error""#.utf8)
    private static let fetchedPrefix = Array(#"{"type":"fetched""#.utf8)
    private static let eventPattern = Array(#""event":"#.utf8)
    private static let seqPattern = Array(#""seq":"#.utf8)
}
