import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

/// Kills a real `tocsin serve` process with SIGKILL while events are being published, restarts
/// it, and checks that the reconnecting subscriber receives every acknowledged publish that
/// matches, exactly in seq order.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct CrashRecoveryTests {
    final class Log: Sendable {
        /// description -> seq of every publish the broker acknowledged.
        let acknowledged = Mutex<[String: Int64]>([:])
        /// Notifications as the subscriber library yielded them (duplicates already dropped).
        let received = Mutex<[(seq: Int64, description: String)]>([])
        let connections = Atomic<Int>(0)
    }

    static func event(_ i: Int, kind: String) -> JSONValue {
        [
            "kind": .string(kind), "severity": 3, "location": ["lat": 52.0, "lon": 4.0], "area": "Delft",
            "description": .string("n\(i)"), "time": .string(TimeFormat.format(TimeFormat.nowMillis())),
        ]
    }

    @Test func everyAcknowledgedPublishIsDeliveredInOrderAcrossASigkill() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        var server = try await ServerProcess(arguments: ["serve", "--port", "0", "--data-dir", directory])
        let port = server.port
        let base = "http://127.0.0.1:\(port)"
        let log = Log()
        var logger = Logger(label: "crash-test")
        logger.logLevel = .critical

        let subscriber = Subscriber(
            configuration: .init(url: "ws://127.0.0.1:\(port)/v1/ws", client: "survivor"),
            requests: [SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": "fire"])], logger: logger)
        let subscription = Task {
            for await event in subscriber.events() {
                switch event {
                case .connected: log.connections.add(1, ordering: .relaxed)
                case .notification(let n):
                    for e in n.events {
                        let description = (try? JSONValue.parse(e.json))?["description"]?.stringValue ?? "?"
                        log.received.withLock { $0.append((e.seq, description)) }
                    }
                default: break
                }
            }
        }
        try await waitUntil("the subscriber connected") { log.connections.load(ordering: .relaxed) >= 1 }

        // Publish continuously; only successful (acknowledged) publishes are expected.
        let stopPublishing = Atomic<Bool>(false)
        let published = Atomic<Int>(0)
        let publisher = Task {
            var i = 0
            while !stopPublishing.load(ordering: .relaxed) {
                i += 1
                let kind = i % 3 == 0 ? "flood" : "fire"
                if let reply = try? await HTTPCall.call(.POST, "\(base)/v1/streams/emergencies/events", body: Self.event(i, kind: kind)),
                    let seq = reply["seq"]?.intValue
                {
                    if kind == "fire" { log.acknowledged.withLock { $0["n\(i)"] = seq } }
                    published.add(1, ordering: .relaxed)
                } else {
                    try? await Task.sleep(for: .milliseconds(20))  // the server is down; retry pacing, not a wait for a condition
                }
            }
        }

        try await waitUntil("200 publishes before the crash") { published.load(ordering: .relaxed) >= 200 }
        server.kill(SIGKILL)
        let beforeCrash = published.load(ordering: .relaxed)
        server = try await ServerProcess(arguments: ["serve", "--port", "\(port)", "--data-dir", directory])
        try await waitUntil("200 publishes after the restart") { published.load(ordering: .relaxed) >= beforeCrash + 200 }
        stopPublishing.store(true, ordering: .relaxed)
        await publisher.value

        let expected = log.acknowledged.withLock { $0 }
        try await waitUntil("every acknowledged fire event delivered", timeout: .seconds(30)) {
            let got = Set(log.received.withLock { $0.map(\.description) })
            return expected.keys.allSatisfy(got.contains)
        }
        subscription.cancel()

        let received = log.received.withLock { $0 }
        let seqs = received.map(\.seq)
        #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "strictly increasing seqs, no duplicates")
        for (seq, description) in received where expected[description] != nil {
            #expect(expected[description] == seq, "\(description) arrived with the seq its publish was acknowledged with")
        }
        #expect(log.connections.load(ordering: .relaxed) >= 2, "the subscriber reconnected after the crash")
        #expect(expected.count > 250)
        server.kill(SIGTERM)
    }
}
