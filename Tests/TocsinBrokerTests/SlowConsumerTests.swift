import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

/// A client that subscribes and then stops reading its socket must be disconnected as a slow
/// consumer, while a healthy subscriber of the same events gets every one of them.
@Suite(.timeLimit(.minutes(2)))
struct SlowConsumerTests {
    /// A WebSocket client with a small receive buffer that subscribes and then reads nothing.
    static func stalledClient(port: Int) async throws -> RawConnection {
        let connection = try RawConnection(port: port, receiveBuffer: 4096)
        _ = try await connection.upgrade()
        try connection.send(WebSocketWire.text(#"{"type":"hello","client":"stalled"}"#))
        try connection.send(WebSocketWire.text(#"{"type":"subscribe","channel":"EmergenciesOfKind","params":{"kind":"fire"}}"#))
        return connection
    }

    @Test func aClientThatStopsReadingIsDisconnectedAndOthersAreUnaffected() async throws {
        try await TestBroker.with({ $0.maxOutboundBytes = 256 << 10 }) { broker in
            let stalled = try await Self.stalledClient(port: broker.port)
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
                // Reading at last, the stalled client finds whole frames: the notifications that
                // fitted, then the documented error, then a 1008 close; nothing cut in half.
                // Generous: on a loaded machine (the whole suite beside it) the close takes its time.
                let (bytes, closed) = await stalled.readUntilClosed(timeout: .seconds(60))
                let (frames, complete) = WebSocketWire.frames(bytes)
                #expect(closed)
                #expect(complete, "a frame was cut short")
                #expect(frames.count >= 2)
                #expect(frames.dropLast().last?.text.contains(#""code":"slow_consumer""#) == true)
                #expect(frames.last?.closeCode == 1008)
            }
        }
    }
}
