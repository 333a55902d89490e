#if canImport(Glibc)
import Glibc
#endif
import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

/// A client that subscribes and then stops reading its socket must be disconnected as a slow
/// consumer, while a healthy subscriber of the same events gets every one of them.
@Suite(.timeLimit(.minutes(1)))
struct SlowConsumerTests {
    /// A client WebSocket frame (text, masked, as RFC 6455 requires of clients).
    static func clientFrame(_ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        return [0x81, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }

    /// A plain blocking TCP socket with a small receive buffer that this test never reads.
    static func stalledClient(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw TestFailure("connect failed: errno \(errno)") }
        let upgrade = Array(
            ("GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
        let frames =
            clientFrame(#"{"type":"hello","client":"stalled"}"#)
            + clientFrame(#"{"type":"subscribe","channel":"EmergenciesOfKind","params":{"kind":"fire"}}"#)
        for bytes in [upgrade, frames] {
            guard send(fd, bytes, bytes.count, 0) == bytes.count else { throw TestFailure("send failed") }
        }
        return fd
    }

    @Test func aClientThatStopsReadingIsDisconnectedAndOthersAreUnaffected() async throws {
        try await TestBroker.with({ $0.maxBufferedBytes = 256 << 10 }) { broker in
            let fd = try Self.stalledClient(port: broker.port)
            defer { close(fd) }
            try await connect(broker, client: "healthy") { connection, inbox, _ in
                _ = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
                let padding = String(repeating: "x", count: 2000)
                var event = emergency("fire", severity: 1)
                if case .object(var o) = event {
                    o["description"] = .string(padding)
                    event = .object(o)
                }
                var published = 0
                let before = broker.broker.slowConsumerDisconnectCount
                while broker.broker.slowConsumerDisconnectCount == before {
                    guard published < 20_000 else { throw TestFailure("no slow-consumer disconnect after \(published) events") }
                    published += try await connection.publish(stream: "emergencies", events: Array(repeating: event, count: 100)).count
                    _ = try await inbox.notifications(100)
                }
                // The healthy subscriber is unaffected: the next event arrives too.
                _ = try await connection.publish(stream: "emergencies", events: [emergency("fire", severity: 9)])
                let last = try await inbox.notifications(1)
                #expect(last[0].seq == Int64(published + 1))
            }
        }
    }
}
