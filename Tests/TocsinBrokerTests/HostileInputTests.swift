import Testing
@testable import TocsinBroker
import TocsinClient
import TocsinCore
import TocsinTesting

/// Real bad input over real sockets: malformed HTTP, requests and WebSockets that never finish,
/// non-conforming WebSocket frames, a client that never reads during shutdown. Each gets its
/// documented answer and close, and the broker goes on serving everyone else.
@Suite(.timeLimit(.minutes(3)))
struct HostileInputTests {
    /// Short deadlines, so the tests wait seconds at most.
    /// Deadlines short enough for a test, long enough that a well-behaved request (the final
    /// `/healthz`) meets them on a machine loaded by the whole suite: 400 ms did not always.
    static func quick(_ c: inout BrokerConfiguration) {
        c.http.headTimeout = .milliseconds(1_000)
        c.http.bodyTimeout = .milliseconds(1_500)
        c.firstMessageTimeout = .milliseconds(1_000)
    }

    static func answer(_ bytes: [UInt8]) -> HTTPAnswer { HTTPAnswer(bytes) }

    static func assertServing(_ broker: TestBroker) async throws {
        #expect(try await HTTPCall.send(.GET, broker.httpURL + "/healthz").status == 200)
    }

    @Test func malformedHTTPGetsItsStatusAndACloseWhileOthersAreServed() async throws {
        try await TestBroker.with { broker in
            let cases: [(String, [UInt8], Int, String)] = [
                // The parser cannot tell garbage from a method it does not know: both get 501.
                ("binary garbage", [0x00, 0x01, 0x02, 0x0D, 0x0A, 0x0D, 0x0A], 501, "not_implemented"),
                ("a header without a colon", Array("GET / HTTP/1.1\r\nHost x\r\n\r\n".utf8), 400, "bad_request"),
                ("unknown method", Array("FOO / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), 501, "not_implemented"),
                ("HTTP/2 preface", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8), 505, "http_version_not_supported"),
                ("HTTP/2.0 request", Array("GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n".utf8), 505, "http_version_not_supported"),
                ("100 KB URL", Array(("GET /" + String(repeating: "a", count: 100_000) + " HTTP/1.1\r\nHost: x\r\n\r\n").utf8), 414, "uri_too_long"),
                (
                    "200 KB of headers",
                    Array(("GET / HTTP/1.1\r\n" + (0..<200).map { "X-H\($0): " + String(repeating: "v", count: 1000) + "\r\n" }.joined() + "\r\n").utf8),
                    431, "headers_too_large"
                ),
                ("20,000 headers", Array(("GET / HTTP/1.1\r\n" + (0..<20_000).map { "X-\($0): v\r\n" }.joined() + "\r\n").utf8), 431, "headers_too_large"),
                (
                    "WebSocket version 8",
                    Array(
                        ("GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").utf8), 426, "upgrade_required"
                ),
            ]
            for (name, request, status, code) in cases {
                let connection = try RawConnection(port: broker.port)
                try connection.send(request)
                let (bytes, closed) = await connection.readUntilClosed(timeout: .seconds(30))
                let reply = Self.answer(bytes)
                #expect(reply.status == status, "\(name): \(reply.text.prefix(200))")
                #expect(reply.code == code, "\(name)")
                #expect(closed, "\(name): the connection is closed after the answer")
                if code == "upgrade_required" { #expect(reply.text.contains("Sec-WebSocket-Version: 13")) }
            }
            try await Self.assertServing(broker)
        }
    }

    @Test func getOfTheWebSocketPathWithoutUpgradeIs426() async throws {
        try await TestBroker.with { broker in
            let connection = try RawConnection(port: broker.port)
            try connection.send("GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            let reply = await Self.answer(connection.readUntilClosed(timeout: .seconds(30)).bytes)
            #expect(reply.status == 426)
            #expect(reply.code == "upgrade_required")
            #expect(reply.text.lowercased().contains("upgrade: websocket"))
        }
    }

    @Test func connectionsThatNeverFinishTimeOut() async throws {
        try await TestBroker.with(Self.quick) { broker in
            let requests: [(String, String)] = [
                ("silent", ""),
                ("half a request line", "GET /hea"),
                ("half the headers", "GET /healthz HTTP/1.1\r\nHost: x\r\n"),
                ("a body shorter than its Content-Length", "POST /v1/streams/emergencies/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":"),
            ]
            let connections = try requests.map { name, request in
                let connection = try RawConnection(port: broker.port)
                if !request.isEmpty { try connection.send(request) }
                return (name, connection)
            }
            let before = try await broker.broker.store.stream(named: "emergencies")?.lastSeq
            for (name, connection) in connections {
                let (bytes, closed) = await connection.readUntilClosed(timeout: .seconds(30))
                let reply = Self.answer(bytes)
                #expect(reply.status == 408, "\(name): \(reply.text.prefix(200))")
                #expect(reply.code == "timeout", "\(name)")
                #expect(closed, "\(name)")
            }
            #expect(try await broker.broker.store.stream(named: "emergencies")?.lastSeq == before, "nothing was stored")
            try await Self.assertServing(broker)
        }
    }

    @Test func aWebSocketThatNeverSpeaksIsClosed() async throws {
        // 1.5 s for the first message: the talker's hello must make it in time even on a
        // machine loaded by the whole suite (400 ms did not always, and closed the talker).
        try await TestBroker.with({ $0.firstMessageTimeout = .milliseconds(1_500) }) { broker in
            let silent = try RawConnection(port: broker.port)
            #expect(try await silent.upgrade().hasPrefix("HTTP/1.1 101"))
            // One that says hello in time stays.
            try await connect(broker, client: "talker") { connection, _, _ in
                let (bytes, closed) = await silent.readUntilClosed(timeout: .seconds(30))
                let (frames, complete) = WebSocketWire.frames(bytes)
                #expect(closed && complete)
                // (Frames other than text do not count: only the one error is asked for.)
                let texts = frames.filter { $0.opcode == 1 }
                #expect(texts.count == 1 && texts[0].text.contains(#""code":"timeout""#), "\(frames.map(\.text))")
                #expect(frames.last?.closeCode == 1008)
                _ = try await connection.ping()
            }
        }
    }

    /// The client library, closed on by the broker while `body` waits: `ConnectionClosed`, the
    /// documented error, not the cancellation `body` got.
    @Test func aConnectionTheBrokerClosesEndsTheClientsBodyWithConnectionClosed() async throws {
        _ = try await TestBroker.with({ $0.firstMessageTimeout = .milliseconds(300) }) { broker in
            await #expect(throws: ConnectionClosed.self) {
                try await Connection.run(url: broker.webSocketURL, logger: testLogger) { _ in
                    try await Task.sleep(for: .seconds(30))
                }
            }
        }
    }

    /// Keepalive, end to end: a client that answers no ping is pinged, then closed with 1001 a
    /// period later; one whose library answers pings stays.
    @Test func aClientThatAnswersNoPingIsClosedAndOneThatDoesStays() async throws {
        let period = Duration.milliseconds(600)
        try await TestBroker.with({ $0.keepalivePeriod = period }) { broker in
            try await connect(broker, client: "answers") { connection, _, _ in
                // Two in turn: by the second one's close, the one that answers has had a turn
                // after a ping of its own, where it would have been closed had it not answered.
                for deafClient in ["deaf-1", "deaf-2"] {
                    let started = ContinuousClock.now
                    let deaf = try RawConnection(port: broker.port)
                    #expect(try await deaf.upgrade().hasPrefix("HTTP/1.1 101"))
                    try deaf.send(WebSocketWire.text(#"{"type":"hello","client":"\#(deafClient)"}"#))
                    let (bytes, closed) = await deaf.readUntilClosed(timeout: .seconds(30))
                    let took = ContinuousClock.now - started
                    let frames = WebSocketWire.frames(bytes).frames
                    #expect(closed)
                    #expect(frames.contains { $0.opcode == 9 }, "pinged first: \(frames.map(\.opcode))")
                    #expect(frames.last?.closeCode == 1001, "\(frames.map(\.opcode))")
                    // Its first ping one to two periods after the upgrade, the close a period after it.
                    #expect(took >= period * 2 && took < period * 3 + .seconds(5), "\(took)")
                }
                _ = try await connection.ping()
            }
        }
    }

    @Test func nonConformingWebSocketFramesCloseWithTheirCodes() async throws {
        try await TestBroker.with({ $0.maxMessageBytes = 1000 }) { broker in
            let ping = Array(#"{"type":"ping","id":"1","pad":""#.utf8)
            let cases: [(String, [UInt8], Int)] = [
                ("unmasked", WebSocketWire.text(#"{"type":"ping","id":"1"}"#, masked: false), 1002),
                ("invalid UTF-8", WebSocketWire.frame(Array(#"{"type":"ping","id":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8)), 1007),
                (
                    "fragments over the transport limit",
                    WebSocketWire.frame(ping, fin: false)
                        + (0..<5).flatMap { _ in WebSocketWire.frame(opcode: 0, Array(repeating: 0x78, count: 1000), fin: false) }
                        + WebSocketWire.frame(opcode: 0, Array(#""}"#.utf8)), 1009
                ),
            ]
            for (name, bytes, code) in cases {
                let connection = try RawConnection(port: broker.port)
                _ = try await connection.upgrade()
                try connection.send(bytes)
                let (reply, closed) = await connection.readUntilClosed(timeout: .seconds(30))
                let frames = WebSocketWire.frames(reply).frames
                #expect(closed, "\(name)")
                #expect(frames.last?.closeCode == code, "\(name): \(frames.map(\.opcode))")
            }
            // A single message over the protocol limit (under the transport's) is answered, not closed.
            try await connect(broker, client: "after") { connection, _, _ in
                _ = try await connection.ping()
            }
        }
    }

    @Test func shutdownWithAClientThatNeverReadsEndsWithinTheGrace() async throws {
        let started = ContinuousClock.now
        let stalled = try await TestBroker.with({ $0.shutdownGrace = .milliseconds(500) }) { broker in
            let connection = try RawConnection(port: broker.port, receiveBuffer: 4096)
            _ = try await connection.upgrade()
            try connection.send(WebSocketWire.text(#"{"type":"hello","client":"stalled"}"#))
            try connection.send(WebSocketWire.text(#"{"type":"subscribe","channel":"EmergenciesOfKind","params":{"kind":"fire"}}"#))
            try await waitUntil("the subscription is attached") { broker.broker.currentLoad().subscriptions == 1 }
            // Fill the socket both ways: the broker cannot even write its close frame.
            guard case .object(var event) = emergency("fire", severity: 1) else { return connection }
            event["description"] = .string(String(repeating: "x", count: 2000))
            for _ in 0..<5 {
                _ = try await broker.broker.publish(stream: "emergencies", events: Array(repeating: .object(event), count: 100))
            }
            return connection
        }
        // `with` returns once the broker has shut down: bounded by the grace, not by the client.
        #expect(ContinuousClock.now - started < .seconds(30))
        _ = stalled
    }
}
