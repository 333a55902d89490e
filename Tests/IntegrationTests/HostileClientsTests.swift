import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinStore
import TocsinLoad
import TocsinTesting

extension MultiProcess {
/// A real `tocsin serve` under connections that never finish: a thousand idle and half-open
/// ones at once, and more than it has descriptors for. A normal subscriber beside them gets
/// every event in order, the broker's descriptors and memory come back once the deadlines have
/// closed them, and the accept loop backs off instead of spinning.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HostileClientsTests {
    static let logger: Logger = {
        var logger = Logger(label: "hostile-clients")
        logger.logLevel = .critical
        return logger
    }()

    static func event(_ i: Int) -> JSONValue { CrashRecoveryTests.event(i, kind: "fire") }

    /// Opens `count` connections that never finish, a quarter of each kind.
    static func hostileConnections(port: Int, count: Int) async throws -> [RawConnection] {
        var connections: [RawConnection] = []
        for i in 0..<count {
            let connection = try RawConnection(port: port)
            switch i % 4 {
            case 0: break  // says nothing
            case 1: try connection.send("GET /heal")  // half a request line
            case 2: try connection.send("POST /v1/streams/emergencies/events HTTP/1.1\r\nHost: x\r\nContent-Len")  // half the headers
            default: _ = try await connection.upgrade()  // a WebSocket that never says hello
            }
            connections.append(connection)
        }
        return connections
    }

    @Test func aThousandIdleAndHalfOpenConnectionsHarmNoOne() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let server = try await ServerProcess(arguments: [
            "serve", "--insecure-no-auth", "--port", "0", "--data-dir", directory, "--no-fsync", "--head-timeout", "20", "--first-message-timeout", "20",
        ])
        defer { server.kill(SIGKILL) }
        let figures = ProcessFigures(pid: server.pid)
        let base = "http://127.0.0.1:\(server.port)"
        try await Connection.run(url: "ws://127.0.0.1:\(server.port)/v1/ws", logger: Self.logger) { subscriber in
            let inbox = Inbox(subscriber)
            _ = try await subscriber.hello(client: "steady")
            _ = try await subscriber.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
            // Warm up, then take the baseline.
            for i in 0..<20 { _ = try await HTTPCall.call(.POST, base + "/v1/streams/emergencies/events", body: Self.event(i)) }
            _ = try await inbox.notifications(20)
            let baselineDescriptors = figures.descriptors
            let baselineKiB = figures.residentMemory?.current ?? -1

            // Deadlines of 20 s: long enough for all of them to be open at once, even on a busy machine.
            let hostile = try await Self.hostileConnections(port: server.port, count: 1000)
            try await waitUntil("the broker holds the hostile connections", timeout: .seconds(10)) {
                figures.descriptors >= baselineDescriptors + 900
            }
            let peakKiB = figures.residentMemory?.current ?? -1

            // The subscriber is served meanwhile: every event, in order, no gap.
            var latencies: [Duration] = []
            var seqs: [Int64] = []
            for i in 0..<100 {
                let sent = ContinuousClock.now
                _ = try await HTTPCall.call(.POST, base + "/v1/streams/emergencies/events", body: Self.event(100 + i))
                let got = try await inbox.notifications(1)
                latencies.append(ContinuousClock.now - sent)
                seqs.append(got[0].seq)
            }
            #expect(seqs == Array(21...120), "no gap, no reordering")
            latencies.sort()
            print(
                "hostile clients: 1000 held; publish -> notify p50 \(latencies[50]) p99 \(latencies[98]) max \(latencies[99]); "
                    + "descriptors \(baselineDescriptors) -> \(baselineDescriptors + 1000)+; resident \(baselineKiB) KiB -> \(peakKiB) KiB")

            // The deadlines close every one of them: the descriptors come back.
            try await waitUntil("the broker's descriptors return to their baseline", timeout: .seconds(60)) {
                figures.descriptors <= baselineDescriptors + 5
            }
            let afterKiB = figures.residentMemory?.current ?? -1
            print("hostile clients: after the timeouts, descriptors \(figures.descriptors), resident \(afterKiB) KiB")
            #expect(afterKiB < baselineKiB + 64 * 1024, "memory came back near its baseline (\(baselineKiB) -> \(afterKiB) KiB)")
            for connection in hostile.prefix(8) {
                #expect(await connection.readUntilClosed(timeout: .seconds(5)).closed, "the broker closed it")
            }
            // Each one was closed by its deadline, and counted.
            try await waitUntil("every hostile connection is counted as timed out", timeout: .seconds(30)) {
                guard let metrics = try? await MetricsTests.metrics(base) else { return false }
                return metrics.contains(#"tocsin_http_rejections_total{code="timeout"} 750"#)
                    && metrics.contains("tocsin_websocket_timeouts_total 250")
            }

            _ = try await HTTPCall.call(.POST, base + "/v1/streams/emergencies/events", body: Self.event(999))
            #expect(try await inbox.notifications(1)[0].seq == 121)
            _ = hostile
        }
    }

    @Test func pastItsDescriptorsTheBrokerShedsConnectionsAndServesItsClients() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let server = try await ServerProcess(
            executable: "/usr/bin/prlimit",
            arguments: [
                "--nofile=160:160", ServerProcess.tocsinBinary, "serve", "--insecure-no-auth", "--port", "0", "--data-dir", directory, "--no-fsync",
                "--head-timeout", "3", "--first-message-timeout", "3",
            ])
        defer { server.kill(SIGKILL) }
        let figures = ProcessFigures(pid: server.pid)
        try await Connection.run(url: "ws://127.0.0.1:\(server.port)/v1/ws", logger: Self.logger) { subscriber in
            let inbox = Inbox(subscriber)
            _ = try await subscriber.hello(client: "steady")
            _ = try await subscriber.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
            // More connections than the broker has descriptors for: past its connection limit
            // (the descriptor limit less a reserve) each is answered 503 and closed at once.
            var hostile: [RawConnection] = []
            for _ in 0..<300 { hostile.append(try RawConnection(port: server.port)) }
            let shed = await HTTPAnswer(hostile[299].readUntilClosed(timeout: .seconds(10)).bytes)
            #expect(shed.status == 503 && shed.code == "unavailable", "\(shed.text.prefix(200))")
            #expect(shed.text.contains("Retry-After: 1"))
            #expect(figures.descriptors < 160)

            let cpu = figures.cpuSeconds
            let start = ContinuousClock.now
            // The connected subscriber publishes and receives on its open connection meanwhile.
            for i in 0..<20 { _ = try await subscriber.publish(stream: "emergencies", events: [Self.event(i)]) }
            #expect(try await inbox.notifications(20).map(\.seq) == Array(1...20))
            try await Task.sleep(for: .seconds(1))  // measuring CPU over an interval, not waiting for a condition
            let used = figures.cpuSeconds - cpu
            let elapsed = ContinuousClock.now - start
            let share = used / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            print("300 connections against 160 descriptors: the broker used \(Int(share * 100))% of a core while out of descriptors")
            #expect(share < 0.5, "the accept loop does not spin")

            // The deadlines free descriptors, the queued connections are accepted and time out
            // in turn, and a new client is served.
            try await waitUntil("a new client is served", timeout: .seconds(60)) {
                (try? await HTTPCall.send(.GET, "http://127.0.0.1:\(server.port)/healthz", timeout: .seconds(2)).status) == 200
            }
            _ = try await subscriber.publish(stream: "emergencies", events: [Self.event(21)])
            #expect(try await inbox.notifications(1)[0].seq == 21)
            _ = hostile
        }
    }

    @Test func sigtermWithAClientThatNeverReadsExitsCleanlyWithinTheGrace() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        // Through a shell only to keep the server's stderr (exec: the pid is the server's).
        let server = try await ServerProcess(
            executable: "/bin/sh",
            arguments: [
                "-c", #"exec "$0" serve --insecure-no-auth --port 0 --data-dir "$1" --no-fsync --shutdown-grace 1 2>"$1/stderr.log""#,
                ServerProcess.tocsinBinary, directory,
            ])
        defer { server.kill(SIGKILL) }
        let stalled = try RawConnection(port: server.port, receiveBuffer: 4096)
        _ = try await stalled.upgrade()
        try stalled.send(WebSocketWire.text(#"{"type":"hello","client":"stalled"}"#))
        try stalled.send(WebSocketWire.text(#"{"type":"subscribe","channel":"EmergenciesOfKind","params":{"kind":"fire"}}"#))
        let base = "http://127.0.0.1:\(server.port)"
        try await waitUntil("the stalled client is subscribed") {
            (try? await MetricsTests.metrics(base)).map { $0.contains("tocsin_sessions_opened_total 1") } ?? false
        }
        guard case .object(var event) = Self.event(0) else { return }
        event["description"] = .string(String(repeating: "x", count: 2000))
        for _ in 0..<5 {
            _ = try await HTTPCall.call(.POST, base + "/v1/streams/emergencies/events", body: .array(Array(repeating: .object(event), count: 100)))
        }
        let started = ContinuousClock.now
        server.signal(SIGTERM)
        let status = await server.exit()
        let took = ContinuousClock.now - started
        print("SIGTERM with a client that never reads: exited after \(took)")
        #expect(status == 0, "exit status \(status)")
        #expect(took < .seconds(20))
        let log = (try? String(contentsOfFile: directory + "/stderr.log", encoding: .utf8)) ?? ""
        #expect(log.contains("broker stopped"), "\(log)")
        #expect(!log.contains("CancellationError"), "\(log)")
        _ = stalled
    }
}
}

/// A spawned `tocsin` inherits no descriptor of its parent's: NIO opens and accepts sockets
/// without close-on-exec, and a child holding a copy of a connection its parent closed kept it
/// open (a client waiting for the close never saw it).
@Suite(.timeLimit(.minutes(1)))
struct ChildDescriptorTests {
    @Test func aSpawnedServerHoldsNoneOfItsParentsDescriptors() async throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)  // deliberately without close-on-exec
        defer { for fd in ends { close(fd) } }
        let inherited = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(ends[0])")
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let server = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "0", "--data-dir", directory])
        defer { server.kill(SIGKILL) }
        let held = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/fd").compactMap {
            try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server.pid)/fd/\($0)")
        }
        #expect(!held.contains(inherited), "the child holds the parent's \(inherited)")
    }
}
