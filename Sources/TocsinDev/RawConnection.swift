import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain blocking TCP connection to a server on this host, for tests and benchmarks that must
/// send what no well-behaved client library would: half a request, garbage, unmasked WebSocket
/// frames, or nothing at all — or read nothing.
public final class RawConnection: @unchecked Sendable {
    // @unchecked: its user drives each connection from one task at a time.
    public let fd: Int32

    /// Connects to `host`:`port` (an IPv4 address; loopback unless told); `receiveBuffer` shrinks
    /// the socket's receive buffer (a client that stops reading then fills the server's side sooner).
    public init(host: String = "127.0.0.1", port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RawConnectionError("socket() failed: errno \(errno)") }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            Glibc.close(fd)
            throw RawConnectionError("connect to \(host):\(port) failed: errno \(code)")
        }
    }

    deinit { Glibc.close(fd) }

    public func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw RawConnectionError("send failed: errno \(errno)") }
            sent += n
        }
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// What the server sent until it closed the connection (`closed`), or until `timeout`
    /// passed with the connection still open. Reads on a thread of its own: a blocking read on
    /// Swift's small cooperative pool could starve the in-process server it waits for.
    public func readUntilClosed(timeout: Duration) async -> (bytes: [UInt8], closed: Bool) {
        await offPool { self.blockingReadUntilClosed(timeout: timeout) }
    }

    private func blockingReadUntilClosed(timeout: Duration) -> (bytes: [UInt8], closed: Bool) {
        let deadline = ContinuousClock.now + timeout
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return (received, false) }
            var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pollfd, 1, Int32(clamping: max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return (received, true) }
            received.append(contentsOf: buffer[0..<n])
        }
    }

    /// Sends the opening handshake of a WebSocket to /v1/ws and reads up to the end of the reply's head.
    public func upgrade(version: String = "13") async throws -> String {
        try await offPool { try self.blockingUpgrade(version: version) }
    }

    private func blockingUpgrade(version: String) throws -> String {
        try send(
            "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: \(version)\r\n\r\n")
        var head: [UInt8] = []
        var byte: UInt8 = 0
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
            guard recv(fd, &byte, 1, 0) == 1 else { throw RawConnectionError("connection closed during the WebSocket handshake") }
            head.append(byte)
        }
        return String(decoding: head, as: UTF8.self)
    }
}

public struct RawConnectionError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Runs blocking `body` on a new thread and returns its result.
private func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

private func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

/// WebSocket frames as a client writes them, and as a server's reply bytes read back.
public enum WebSocketWire {
    /// One client frame (RFC 6455 §5.2): masked unless told otherwise.
    public static func frame(opcode: UInt8 = 1, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        switch payload.count {
        case ..<126: out.append(maskBit | UInt8(payload.count))
        case ...0xFFFF: out += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default: out += [maskBit | 127] + (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        guard masked else { return out + payload }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        return out + key + payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
    }

    public static func text(_ text: String, masked: Bool = true) -> [UInt8] { frame(Array(text.utf8), masked: masked) }

    /// A server frame read back: opcode and payload.
    public struct Frame: Sendable, Equatable {
        public var opcode: UInt8
        public var payload: [UInt8]
        public var text: String { String(decoding: payload, as: UTF8.self) }
        /// A close frame's status code.
        public var closeCode: Int? { opcode == 8 && payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : nil }
    }

    /// Splits server bytes into frames; `complete` is false when the bytes end inside a frame.
    public static func frames(_ bytes: [UInt8]) -> (frames: [Frame], complete: Bool) {
        var frames: [Frame] = []
        var i = 0
        while i < bytes.count {
            guard i + 2 <= bytes.count else { return (frames, false) }
            var length = Int(bytes[i + 1] & 0x7F)
            var start = i + 2
            if length == 126 {
                guard start + 2 <= bytes.count else { return (frames, false) }
                length = Int(bytes[start]) << 8 | Int(bytes[start + 1])
                start += 2
            } else if length == 127 {
                guard start + 8 <= bytes.count else { return (frames, false) }
                length = bytes[start..<start + 8].reduce(0) { $0 << 8 | Int($1) }
                start += 8
            }
            guard start + length <= bytes.count else { return (frames, false) }
            frames.append(Frame(opcode: bytes[i] & 0x0F, payload: Array(bytes[start..<start + length])))
            i = start + length
        }
        return (frames, true)
    }
}
