import ServiceLifecycle
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinStore
import TocsinTesting

/// A store whose reads of events and definitions fail with `store_unavailable` while `down` is
/// set, as a database out of reach would make them; everything else goes to the real store.
final class StoreWithFailingReads: Store {
    let base: any Store
    let down = Atomic<Bool>(false)
    /// Reads refused so far.
    let refused = Atomic<Int>(0)

    init(_ base: any Store) { self.base = base }

    private func refuseWhileDown() throws {
        guard down.load(ordering: .relaxed) else { return }
        refused.add(1, ordering: .relaxed)
        throw TocsinError(.storeUnavailable, "the test took the store's reads away")
    }

    func readEvents(stream: String, after: Int64, limit: Int) async throws -> [StoredEvent] {
        try refuseWhileDown()
        return try await base.readEvents(stream: stream, after: after, limit: limit)
    }
    func streams() async throws -> [StreamInfo] {
        try refuseWhileDown()
        return try await base.streams()
    }
    func channels() async throws -> [ChannelDefinition] {
        try refuseWhileDown()
        return try await base.channels()
    }

    func putStream(_ definition: StreamDefinition, recreate: Bool) async throws -> (StreamInfo, PutOutcome) {
        try await base.putStream(definition, recreate: recreate)
    }
    func stream(named name: String) async throws -> StreamInfo? { try await base.stream(named: name) }
    func append(stream: String, events: [String], key: String?, trace: String?) async throws -> Appended {
        try await base.append(stream: stream, events: events, key: key, trace: trace)
    }
    func append(
        stream: String, events: [String], key: String?, trace: String?, completion: @escaping @Sendable (Result<Appended, any Error>) -> Void
    ) {
        base.append(stream: stream, events: events, key: key, trace: trace, completion: completion)
    }
    func putChannel(_ definition: ChannelDefinition) async throws -> PutOutcome { try await base.putChannel(definition) }
    func deleteChannel(named name: String) async throws -> Bool { try await base.deleteChannel(named: name) }
    func putDataset(_ definition: DatasetDefinition) async throws -> PutOutcome { try await base.putDataset(definition) }
    func datasets() async throws -> [DatasetInfo] { try await base.datasets() }
    func deleteDataset(named name: String) async throws -> Bool { try await base.deleteDataset(named: name) }
    func writeDataset(_ name: String, writes: [DatasetRecordWrite]) async throws -> Int64 { try await base.writeDataset(name, writes: writes) }
    func readDataset(_ name: String, afterKey: String?, limit: Int) async throws -> DatasetPage {
        try await base.readDataset(name, afterKey: afterKey, limit: limit)
    }
    func openSubscription(
        client: String, channel: String, params: [String: JSONValue], initial: StreamPosition, maxPerClient: Int?
    ) async throws -> (SubscriptionRecord, created: Bool) {
        try await base.openSubscription(client: client, channel: channel, params: params, initial: initial, maxPerClient: maxPerClient)
    }
    func subscriptions(client: String) async throws -> [SubscriptionRecord] { try await base.subscriptions(client: client) }
    func subscription(id: String) async throws -> SubscriptionRecord? { try await base.subscription(id: id) }
    func deleteSubscription(id: String) async throws -> Bool { try await base.deleteSubscription(id: id) }
    func saveAcks(_ acks: [String: StreamPosition]) async throws { try await base.saveAcks(acks) }
    func enforceRetention(nowMillis: Int64) async throws -> Int { try await base.enforceRetention(nowMillis: nowMillis) }
    func usage() async throws -> StoreUsage { try await base.usage() }
    var changes: ChangeFeed { base.changes }
    func maintenanceServices() -> [any Service] { base.maintenanceServices() }
}

/// What the broker's loops do when the store cannot be read (its database restarting or
/// failing over): they wait the outage out and go on, rather than ending for good.
@Suite(.timeLimit(.minutes(1)))
struct StoreOutageTests {
    /// A broker on a store whose reads fail on demand.
    static func withBroker(_ body: @Sendable (TestBroker, StoreWithFailingReads) async throws -> Void) async throws {
        let store = Mutex<StoreWithFailingReads?>(nil)
        try await TestBroker.with(wrap: { base in
            let wrapped = StoreWithFailingReads(base)
            store.withLock { $0 = wrapped }
            return wrapped
        }) { broker in
            // Let go of it: the broker's store must be able to close when the broker ends.
            let flaky = try #require(store.withLock { $0.take() })
            try await body(broker, flaky)
        }
    }

    @Test func aReplayThatCannotReadTheStoreGoesOnWhenItCan() async throws {
        try await Self.withBroker { broker, flaky in
            let subscription = try await connect(broker, client: "replayer") { connection, _, _ in
                try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
            }
            // Missed while away: more than one read's worth (a replay reads 1000 at a time).
            for _ in 0..<25 {
                _ = try await broker.broker.publish(stream: "emergencies", events: Array(repeating: emergency("fire", severity: 1), count: 100))
            }
            flaky.down.store(true, ordering: .relaxed)
            try await connect(broker, client: "replayer") { _, inbox, welcome in
                #expect(welcome.subscriptions.map(\.subscription) == [subscription.subscription])
                try await waitUntil("the replay tried the store and was refused twice") { flaky.refused.load(ordering: .relaxed) >= 2 }
                #expect(await inbox.isQuiet(for: .milliseconds(100)), "no notification and no error while the store cannot be read")
                flaky.down.store(false, ordering: .relaxed)
                let notifications = try await inbox.notifications(2500)
                #expect(notifications.map(\.seq) == Array(1...2500), "everything, in order, once the store answers")
            }
        }
    }

    /// Another process defines a channel while the store cannot be read: the catalog reload
    /// that the change calls for is retried until it works, not dropped.
    @Test func aCatalogReloadThatCannotReadTheStoreIsRetried() async throws {
        try await Self.withBroker { broker, flaky in
            flaky.down.store(true, ordering: .relaxed)
            // As another broker sharing the store would: stored, then announced.
            let definition = try ChannelDefinition(name: "Severe", json: ["stream": "emergencies", "where": "severity >= 4"])
            _ = try await flaky.base.putChannel(definition)
            flaky.changes.definitionsChanged()
            try await waitUntil("the reload tried the store and was refused twice") { flaky.refused.load(ordering: .relaxed) >= 2 }
            #expect(try await HTTPCall.send(.GET, broker.httpURL + "/v1/channels/Severe").status == 404)
            flaky.down.store(false, ordering: .relaxed)
            try await waitUntil("the channel is served once the store answers") {
                (try? await HTTPCall.send(.GET, broker.httpURL + "/v1/channels/Severe").status) == 200
            }
        }
    }
}
