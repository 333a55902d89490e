import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinStore
import TocsinTesting

extension MultiProcess {
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
        /// Publishes acknowledged, of any kind.
        let published = Atomic<Int>(0)
        /// The last event number handed out to a publish.
        let counter = Atomic<Int>(0)
        let stopPublishing = Atomic<Bool>(false)
        /// Event numbers whose publish was sent and not answered (its connection went away).
        let unanswered = Mutex<[Int]>([])
        /// Publishes sent again after their connection went away.
        let resent = Atomic<Int>(0)

        /// The next event to publish: an unanswered one first.
        func next() -> Int {
            if let i = unanswered.withLock({ $0.popLast() }) {
                resent.add(1, ordering: .relaxed)
                return i
            }
            return counter.add(1, ordering: .relaxed).newValue
        }
    }

    static func event(_ i: Int, kind: String) -> JSONValue {
        [
            "kind": .string(kind), "severity": 3, "location": ["lat": 52.0, "lon": 4.0], "area": "Delft",
            "description": .string("n\(i)"), "time": .string(TimeFormat.format(WallClock.nowMillis())),
        ]
    }

    enum PublishPath: String, Sendable, CaseIterable {
        /// One HTTP publish at a time.
        case http
        /// One WebSocket connection with up to 32 publishes in flight (pipelined), reconnecting
        /// when the server is gone and sending the unanswered publishes again with their keys:
        /// every event is then stored exactly once.
        case pipelinedWebSocketWithKeys
    }

    /// Publishes event `i` with its key; one whose connection fails goes back on the list of
    /// unanswered publishes.
    static func publishKeyed(_ i: Int, on connection: Connection, log: Log, record: (Int, Int64?) -> Bool) async throws {
        do {
            let seqs = try await connection.publish(stream: "emergencies", events: [event(i, kind: i % 3 == 0 ? "flood" : "fire")], key: "n\(i)")
            _ = record(i, seqs.first)
        } catch {
            log.unanswered.withLock { $0.append(i) }
            throw error
        }
    }

    /// Each publish path with the server's tasks on Swift's pool (the default), and the
    /// pipelined one also with them on the event loops (`TOCSIN_TASK_EXECUTOR=event-loops`).
    /// The pipelined path also on PostgreSQL (a throwaway server, which outlives the broker's SIGKILL).
    @Test(arguments: [
        (PublishPath.http, "pool", false), (.pipelinedWebSocketWithKeys, "pool", false), (.pipelinedWebSocketWithKeys, "event-loops", false),
        (.pipelinedWebSocketWithKeys, "pool", true),
    ])
    func everyAcknowledgedPublishIsDeliveredInOrderAcrossASigkill(path: PublishPath, executor: String, postgres: Bool) async throws {
        let environment = ["TOCSIN_TASK_EXECUTOR": executor]
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let database = postgres ? try await PostgresServer.database() : nil
        defer { database?.destroy() }
        let store = database.map { ["--store", $0.url] } ?? []
        var server = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "0", "--data-dir", directory] + store, environment: environment)
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
        /// Notes event `i` as acknowledged with `seq` (nil: it was not); true if it was.
        let record: @Sendable (_ i: Int, _ seq: Int64?) -> Bool = { i, seq in
            guard let seq else { return false }
            if i % 3 != 0 { log.acknowledged.withLock { $0["n\(i)"] = seq } }
            log.published.add(1, ordering: .relaxed)
            return true
        }
        let publisher = Task {
            while !log.stopPublishing.load(ordering: .relaxed) {
                switch path {
                case .http:
                    let i = log.counter.add(1, ordering: .relaxed).newValue
                    let reply = try? await HTTPCall.call(
                        .POST, "\(base)/v1/streams/emergencies/events", body: Self.event(i, kind: i % 3 == 0 ? "flood" : "fire"))
                    if record(i, reply?["seq"]?.intValue) { continue }
                case .pipelinedWebSocketWithKeys:
                    _ = try? await Connection.run(url: "ws://127.0.0.1:\(port)/v1/ws", logger: logger) { connection in
                        try await withThrowingDiscardingTaskGroup { group in
                            for _ in 0..<32 {
                                group.addTask {
                                    while !log.stopPublishing.load(ordering: .relaxed) {
                                        try await Self.publishKeyed(log.next(), on: connection, log: log, record: record)
                                    }
                                }
                            }
                        }
                    }
                }
                try? await Task.sleep(for: .milliseconds(20))  // the server is down; retry pacing, not a wait for a condition
            }
        }

        try await waitUntil("200 publishes before the crash") { log.published.load(ordering: .relaxed) >= 200 }
        server.kill(SIGKILL)
        let beforeCrash = log.published.load(ordering: .relaxed)
        server = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "\(port)", "--data-dir", directory] + store, environment: environment)
        try await waitUntil("200 publishes after the restart") { log.published.load(ordering: .relaxed) >= beforeCrash + 200 }
        log.stopPublishing.store(true, ordering: .relaxed)
        await publisher.value
        if path == .pipelinedWebSocketWithKeys {
            // The publishes left unanswered at the crash, once more: now every event is stored.
            try await Connection.run(url: "ws://127.0.0.1:\(port)/v1/ws", logger: logger) { connection in
                while !log.unanswered.withLock({ $0.isEmpty }) {
                    try await Self.publishKeyed(log.next(), on: connection, log: log, record: record)
                }
            }
            let fires = (1...log.counter.load(ordering: .relaxed)).filter { $0 % 3 != 0 }.map { "n\($0)" }
            #expect(Set(log.acknowledged.withLock { $0.keys }) == Set(fires), "every event sent was acknowledged at last")
            #expect(log.resent.load(ordering: .relaxed) > 0, "publishes in flight at the crash were sent again")
        }

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
        if path == .pipelinedWebSocketWithKeys {
            #expect(received.count == expected.count, "each event stored once: resending with its key stored no duplicate")
        }
        #expect(log.connections.load(ordering: .relaxed) >= 2, "the subscriber reconnected after the crash")
        #expect(expected.count > 250)
        server.kill(SIGTERM)
    }
}
}
