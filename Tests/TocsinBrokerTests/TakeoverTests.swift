import Foundation
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinStore
import TocsinTesting

/// A second connection saying hello with a client id that another connection is using takes
/// its subscriptions over: quickly (linear in the subscriptions), without holding up other
/// clients, and telling the old connection.
@Suite(.timeLimit(.minutes(1)))
struct TakeoverTests {
    /// Stores `count` subscriptions of `client` to EmergenciesOfKind (kinds k0, k1, …), many at a time.
    static func makeSubscriptions(_ broker: TestBroker, client: String, count: Int) async throws {
        let store = broker.broker.store
        guard let stream = try await store.stream(named: "emergencies") else { throw TestFailure("no example stream") }
        let start = StreamPosition(epoch: stream.epoch, seq: 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<16 {
                group.addTask {
                    for i in stride(from: worker, to: count, by: 16) {
                        _ = try await store.openSubscription(
                            client: client, channel: "EmergenciesOfKind", params: ["kind": .string("k\(i)")], initial: start)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func takingOverThousandsOfSubscriptionsIsQuickAndOthersAreServedMeanwhile() async throws {
        let count = 8_000
        try await TestBroker.with { broker in
            try await Self.makeSubscriptions(broker, client: "big", count: count)
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { first in
                let inbox = Inbox(first)
                let resumed = try await first.hello(client: "big")
                #expect(resumed.subscriptions.count == count)

                // Another client's health checks while the second connection takes over.
                let slowest = Mutex(Duration.zero)
                let done = Atomic(false)
                let prober = Task {
                    while !done.load(ordering: .relaxed) {
                        let start = ContinuousClock.now
                        let reply = try await HTTPCall.send(.GET, broker.httpURL + "/healthz", timeout: .seconds(20))
                        #expect(reply.status == 200)
                        let took = ContinuousClock.now - start
                        slowest.withLock { $0 = max($0, took) }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
                let took = try await Connection.run(url: broker.webSocketURL, logger: testLogger) { second in
                    let start = ContinuousClock.now
                    let welcome = try await second.hello(client: "big")
                    let took = ContinuousClock.now - start
                    #expect(welcome.subscriptions.count == count)
                    try await second.ping()
                    return took
                }
                done.store(true, ordering: .relaxed)
                try await prober.value
                print("takeover of \(count) subscriptions: \(took); slowest /healthz meanwhile: \(slowest.withLock { $0 })")
                // Generous bounds (a debug build on a shared 2-core machine, beside other tests):
                // it took 15-20 s when quadratic. Tasks run on Swift's pool here; the event-loop
                // case is IntegrationTests' TakeoverOnEventLoopsTests.
                #expect(took < .seconds(5))
                #expect(slowest.withLock { $0 } < .seconds(2))

                // The old connection is told, once per subscription, and acks on them now fail.
                var told = Set<String>()
                while told.count < count {
                    let frame = try await inbox.next()
                    guard case .unsubscribed(nil, let id, .takenOver) = frame else {
                        throw TestFailure("expected unsubscribed (taken_over), got \(frame.encoded)")
                    }
                    told.insert(id)
                }
                #expect(told == Set(resumed.subscriptions.map(\.subscription)))
                try await first.send(.ack(id: "a1", subscription: resumed.subscriptions[0].subscription, seq: 0))
                guard case .error("a1", let code, _, _) = try await inbox.next() else { throw TestFailure("expected an error") }
                #expect(code == "unknown_subscription")
            }
        }
    }

    @Test func aClientHoldsAtMostTheConfiguredNumberOfSubscriptions() async throws {
        try await TestBroker.with({ $0.maxSubscriptionsPerClient = 3 }) { broker in
            try await connect(broker, client: "capped") { connection, _, _ in
                var ids: [String] = []
                for kind in ["a", "b", "c"] {
                    ids.append(try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": .string(kind)]).subscription)
                }
                let refused = await #expect(throws: TocsinError.self) {
                    _ = try await connection.subscribe(channel: "AreaDigest", params: ["area": "Delft"])
                }
                #expect(refused?.code == .tooManySubscriptions)
                #expect(refused?.message.contains("3") == true)
                // Resuming one it has is no new subscription.
                #expect(try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "b"]).subscription == ids[1])
                try await connection.unsubscribe(ids[0])
                _ = try await connection.subscribe(channel: "AreaDigest", params: ["area": "Delft"])
            }
            // The limit is per client id.
            try await connect(broker, client: "other") { connection, _, _ in
                _ = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "a"])
            }
            let stored = try await broker.broker.store.subscriptions(client: "capped")
            #expect(stored.count == 3)
        }
    }
}
