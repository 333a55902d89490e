import Foundation
import ServiceLifecycle
import Synchronization
import Testing
import TocsinCore
import TocsinTesting
@testable import TocsinStore

/// What only the SQLite store has: its file, its writer lock, its size limit in pages, its
/// checkpoints, and the poller that follows other processes sharing the file. Everything any
/// store must do is in `StoreConformanceTests`, which runs on SQLite too.
@Suite(.timeLimit(.minutes(1)))
final class SQLiteStoreTests {
    let directory = NSTemporaryDirectory() + "tocsin-store-\(UUID().uuidString)"
    var path: String { directory + "/db.sqlite" }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func open() throws -> SQLiteStore {
        try SQLiteStore(configuration: .init(path: path, synchronousFull: false))
    }

    static let stream = Fixtures.stream
    static let big = Fixtures.big
    static let unbounded = Fixtures.unbounded
    static func text(_ bytes: Int) -> String { Fixtures.text(bytes) }
    func fill(_ store: SQLiteStore) async throws -> Int64 { try await Fixtures.fill(store) }

    /// Appends with one key queued together behind a held writer share one transaction: exactly
    /// one is stored. (The rest of publish keys: `StoreConformanceTests`.)
    @Test func appendsWithOneKeyInOneTransactionStoreOne() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        let other = try StreamDefinition(name: "t", json: ["fields": [["name": "n", "type": "int"]]])
        _ = try await store.putStream(other, recreate: false)
        let first = try await store.append(stream: "s", events: [#"{"n":1}"#, #"{"n":2}"#, #"{"n":3}"#], key: "k1")

        // Queued together behind a held writer, so they share one transaction: exactly one is stored.
        let gate = DispatchSemaphore(value: 0)
        let held = Atomic<Bool>(false)
        let holder = Task { try await store.pool.writeWithoutTransaction { _ in held.store(true, ordering: .relaxed); gate.wait() } }
        try await TocsinTesting.waitUntil("the writer is held") { held.load(ordering: .relaxed) }
        let commits = store.commitCount
        let replies = Mutex<[Appended?]>([])
        // The commit thread takes this one and waits for the writer with it; the two behind it
        // are then queued together.
        store.append(stream: "t", events: [#"{"n":0}"#], key: nil) { _ in }
        try await TocsinTesting.waitUntil("the commit thread waits for the writer") { store.committer.queued == 0 }
        for n in [4, 5] {
            store.append(stream: "s", events: [#"{"n":\#(n)}"#], key: "k2") { r in replies.withLock { $0.append(try? r.get()) } }
        }
        #expect(store.committer.queued == 2)
        gate.signal()
        try await holder.value
        try await TocsinTesting.waitUntil("both answered") { replies.withLock { $0.count } == 2 }
        let (ra, rb) = replies.withLock { ($0[0], $0[1]) }
        #expect(store.commitCount == commits + 2, "the one taken first, then both together")
        #expect(ra == Appended(epoch: first.epoch, seqs: [4]) && rb == Appended(epoch: first.epoch, seqs: [4], duplicate: true))
        #expect(try await store.readEvents(stream: "s", after: 3, limit: 10).map(\.json) == [#"{"n":4}"#])
    }

    @Test func retentionDeletesPublishKeysPastTheWindow() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, publishKeyWindow: .milliseconds(300)))
        _ = try await store.putStream(Self.stream, recreate: false)
        #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k").seqs == [1])
        #expect(try await store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM publish_keys") } == 1)
        // Retention deletes the rows of keys past the window.
        _ = try await store.enforceRetention(nowMillis: WallClock.nowMillis() + 1_000)
        #expect(try await store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM publish_keys") } == 0)
    }

    /// Appends queued together share a transaction; one too big for the room left must fail
    /// alone, not take the others down with it.
    @Test func anAppendTooBigForTheRoomLeftFailsAloneNotTheAppendsCommittedWithIt() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: 256 << 10))
        _ = try await store.putStream(Self.big, recreate: false)
        let appends: [[String]] = [Array(repeating: Self.text(10), count: 500), Array(repeating: Self.text(4000), count: 100), [Self.text(10)]]
        let got = try await appendTogether(appends, to: "big", in: store)
        #expect(try got[0]?.get().seqs == Array(1...500))
        #expect(throws: TocsinError.self) { try got[1]?.get() }
        if case .failure(let error as TocsinError)? = got[1] { #expect(error.code == .storeFull) }
        #expect(try got[2]?.get().seqs == [501])
        #expect(try await store.readEvents(stream: "big", after: 0, limit: 1000).map(\.seq) == Array(1...501))
    }

    /// The appends' outcomes when all but the first share one transaction: the writer is held;
    /// the commit thread takes the first append and waits for the writer while the others
    /// queue behind it.
    func appendTogether(_ appends: [[String]], to stream: String, in store: SQLiteStore) async throws -> [Int: Result<Appended, any Error>] {
        let holding = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            store.pool.writeWithoutTransaction { _ in
                holding.signal()
                release.wait()
            }
        }
        holding.wait()
        let outcomes = Mutex<[Int: Result<Appended, any Error>]>([:])
        let all = Mutex<CheckedContinuation<Void, Never>?>(nil)
        for (i, events) in appends.enumerated() {
            store.append(stream: stream, events: events, key: nil) { result in
                let count = outcomes.withLock { o in
                    o[i] = result
                    return o.count
                }
                if count == appends.count { all.withLock { $0 }?.resume() }
            }
            if i == 0 { try await TocsinTesting.waitUntil("the commit thread took the first append") { store.committer.queued == 0 } }
        }
        try await TocsinTesting.waitUntil("the other appends queue behind the held writer") { store.committer.queued == appends.count - 1 }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            all.withLock { $0 = continuation }
            release.signal()
        }
        return outcomes.withLock { $0 }
    }

    /// An append SQLite refuses for what it carries (here a trigger refuses one body) fails
    /// alone: the appends that shared its transaction are stored and answered.
    @Test func anAppendTheDatabaseRefusesFailsAloneNotTheAppendsBesideIt() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        try await store.pool.write { db in
            try db.execute(sql: "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.body LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'poisoned'); END")
        }
        let got = try await appendTogether([[#"{"n":1}"#], [#"{"n":2}"#], [#"{"poison":3}"#], [#"{"n":4}"#]], to: Self.stream.name, in: store)
        #expect(try got[0]?.get().seqs == [1])
        #expect(try got[1]?.get().seqs == [2])
        #expect(throws: TocsinError.self) { try got[2]?.get() }
        #expect(try got[3]?.get().seqs == [3])
        #expect(try await store.readEvents(stream: Self.stream.name, after: 0, limit: 10).map(\.json) == [#"{"n":1}"#, #"{"n":2}"#, #"{"n":4}"#])
    }

    /// A store at `path` with the `big` stream, filled, its write-ahead log checkpointed and
    /// emptied (as a clean shutdown leaves it, when GRDB's switch to WAL writes to the file).
    /// Returns the last seq stored.
    func fillAndCheckpoint(maxBytes: Int64) async throws -> Int64 {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: maxBytes))
        _ = try await store.putStream(Self.big, recreate: false)
        let stored = try await fill(store)
        try await store.pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
        return stored
    }

    @Test func aStoreThatFilledUpOpensAgainWithItsLimit() async throws {
        let limit: Int64 = 256 << 10
        let stored = try await fillAndCheckpoint(maxBytes: limit)
        // Opening takes a page of its own (GRDB's switch to WAL creates and drops a table) before
        // the limit is set, so the limit in force may be a page above the configured one.
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: limit))
        let usage = try await store.usage()
        let inForce = try #require(usage.maxBytes)
        #expect(inForce >= limit && inForce <= limit + 4096, "\(usage)")
        #expect(usage.usedBytes <= limit, "\(usage)")
        await #expect(throws: TocsinError.storeFull(maxBytes: inForce)) {
            _ = try await store.append(stream: "big", events: [Self.text(4000), Self.text(4000)])
        }
        _ = try await store.enforceRetention(nowMillis: WallClock.nowMillis())
        #expect(try await store.append(stream: "big", events: [Self.text(4000)]).seqs == [stored + 1])
    }

    @Test func aStoreLargerThanItsLimitKeepsItsSizeAndSaysWhichLimitIsInForce() async throws {
        let stored = try await fillAndCheckpoint(maxBytes: 512 << 10)
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: 128 << 10))
        let usage = try await store.usage()
        #expect(usage.maxBytes == usage.allocatedBytes, "SQLite raised the limit to the file's size")
        #expect(try #require(usage.maxBytes) > 256 << 10)
        await #expect(throws: TocsinError.storeFull(maxBytes: usage.maxBytes)) {
            _ = try await store.append(stream: "big", events: [Self.text(4000), Self.text(4000)])
        }
        _ = try await store.enforceRetention(nowMillis: WallClock.nowMillis())
        #expect(try await store.append(stream: "big", events: [Self.text(4000)]).seqs == [stored + 1])
    }

    /// A commit that waits past the threshold (here for another writer of the file; in
    /// production usually for a slow disk's sync) is counted as slow.
    @Test func aCommitHeldUpPastTheThresholdCountsAsSlow() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, slowCommitThreshold: .milliseconds(200)))
        _ = try await store.putStream(Self.stream, recreate: false)
        let before = store.slowCommitCount
        let holding = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            store.pool.writeWithoutTransaction { _ in
                holding.signal()
                Thread.sleep(forTimeInterval: 0.5)  // the stimulus: the writer is busy for 500 ms
            }
        }
        holding.wait()
        #expect(try await store.append(stream: "s", events: [#"{"n":1}"#]).seqs == [1])
        #expect(store.slowCommitCount == before + 1)
    }

    @Test func backgroundCheckpointsKeepTheLogBoundedAndHandBackWhenStopped() async throws {
        let store = try open()
        _ = try await store.putStream(Self.unbounded, recreate: false)
        let checkpoints = Task { await store.runCheckpoints(every: .milliseconds(5), restartPages: 200) }
        try await waitUntil { try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") } == 0 }
        for n in 1...3000 {
            _ = try await store.append(stream: "u", events: [#"{"n":\#(n)}"#])
        }
        // Without restarts the log would hold every commit: ~3 pages each, 9,000 in all.
        let walPages = (try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int ?? 0) / 4096
        #expect(walPages < 4000)
        #expect(try await store.readEvents(stream: "u", after: 0, limit: 5000).map(\.seq) == Array(1...3000))
        checkpoints.cancel()
        await checkpoints.value
        #expect(try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") } == 1000)
    }

    /// A durable store syncs every commit before `append` returns: its writer runs with
    /// synchronous = FULL (GRDB's pool sets NORMAL when it opens the file in WAL mode).
    @Test func durableStoreSyncsEveryCommit() async throws {
        for (full, expected) in [(true, 2), (false, 1)] {
            let store = try SQLiteStore(configuration: .init(path: path + (full ? "-full" : "-normal"), synchronousFull: full))
            #expect(try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == expected)
        }
    }

    /// Polls `condition` until it holds, for at most 10 s.
    func waitUntil(_ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while try await !condition() {
            guard ContinuousClock.now < deadline else { Issue.record("condition not met within 10 s"); return }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Its maintenance: checkpoints always, the poller only when other processes share the file.
    @Test func maintenanceIsCheckpointsAndThePollerWhenAskedFor() throws {
        #expect(try open().maintenanceServices().map { "\($0)" } == ["sqlite checkpoints"])
        let polling = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, pollInterval: .milliseconds(2)))
        #expect(polling.maintenanceServices().map { "\($0)" } == ["sqlite checkpoints", "sqlite poller"])
    }

    /// Two stores on one file, as two brokers of one host: the polling one's change feed learns
    /// of the other's appends (its tails wake) and of its new definitions (its broker reloads).
    @Test func thePollerFollowsAnotherProcessSharingTheFile() async throws {
        let other = try open()
        _ = try await other.putStream(Self.stream, recreate: false)
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, pollInterval: .milliseconds(2)))
        let definitionChanges = store.changes.definitionChanges()
        let group = ServiceGroup(configuration: .init(services: store.maintenanceServices(), logger: .init(label: "test")))
        let running = Task { try await group.run() }
        async let woke: Void = store.changes.wait(stream: "s", after: 0)
        let appended = try await other.append(stream: "s", events: [#"{"n":1}"#, #"{"n":2}"#])
        await woke
        #expect(store.changes.lastSeq(of: "s") == 2)
        #expect(store.changes.epoch(of: "s") == appended.epoch)
        // Events alone change no definition; a new channel does.
        var changes = definitionChanges.makeAsyncIterator()
        _ = try await other.putChannel(ChannelDefinition(name: "all", stream: "s", params: [], whereClause: "true"))
        #expect(await changes.next() != nil)
        await group.triggerGracefulShutdown()
        try await running.value
    }

    /// Durable subscriptions created while the writer is busy share the next transaction (a
    /// reconnect storm's subscribes do not pay a sync each), and one refused inside it (over the
    /// client's limit) fails alone: the others are stored and told so, and it stores nothing.
    @Test func subscriptionsCreatedTogetherShareATransactionAndARefusedOneFailsAlone() async throws {
        let store = try open()
        let (info, _) = try await store.putStream(Self.stream, recreate: false)
        let start = StreamPosition(epoch: info.epoch, seq: 0)
        let gate = DispatchSemaphore(value: 0)
        let held = Atomic<Bool>(false)
        let holder = Task { try await store.pool.writeWithoutTransaction { _ in held.store(true, ordering: .relaxed); gate.wait() } }
        try await TocsinTesting.waitUntil("the writer is held") { held.load(ordering: .relaxed) }
        try await BatchedCreations.check(
            store, start: start, handling: { store.batcher.committing }, queued: { store.batcher.queued },
            batches: { store.batcher.transactions }
        ) {
            gate.signal()
            try await holder.value
        }
    }

    /// Subscriptions created together in a store that fills up: each is told `store_full` or
    /// success, and exactly those told success are stored (nothing half-stored, nothing stored
    /// that was refused). A subscription it holds still resumes.
    @Test func subscriptionsCreatedTogetherInAFullStoreAreStoredExactlyWhenToldSo() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: 256 << 10))
        _ = try await store.putStream(Self.big, recreate: false)
        let (info, _) = try await store.putStream(Self.stream, recreate: false)
        let start = StreamPosition(epoch: info.epoch, seq: 0)
        _ = try await fill(store)
        var told: [String] = []
        var refused = 0
        var round = 0
        while refused == 0 && round < 500 {
            let outcomes = await withTaskGroup(of: Result<String, any Error>.self) { group in
                for i in 0..<20 {
                    let n = round * 20 + i
                    group.addTask {
                        await Result {
                            try await store.openSubscription(
                                client: "c", channel: "ch", params: ["n": .int(Int64(n))], initial: start, maxPerClient: nil
                            ).0.id
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            for outcome in outcomes {
                switch outcome {
                case .success(let id): told.append(id)
                case .failure(let error):
                    #expect((error as? TocsinError)?.code == .storeFull, "\(error)")
                    refused += 1
                }
            }
            round += 1
        }
        #expect(refused > 0, "the store never refused a subscription")
        let stored = try await store.subscriptions(client: "c")
        #expect(Set(stored.map(\.id)) == Set(told))
        if let held = stored.first {
            let (again, created) = try await store.openSubscription(client: "c", channel: "ch", params: held.params, initial: start, maxPerClient: nil)
            #expect(!created && again.id == held.id)
        }
    }

    /// Streams are stored in the form earlier versions wrote (through `Codable`), byte for byte,
    /// so a store written by either reads the same.
    @Test func aStreamIsStoredInTheFormEarlierVersionsWrote() throws {
        let definitions = [
            Self.stream, Fixtures.ring, Fixtures.unbounded,
            try StreamDefinition(
                name: "d.x-1",
                json: [
                    "fields": [["name": "n", "type": "int"], ["name": "p", "type": "geo", "optional": true], ["name": "l", "type": "list<string>"]],
                    "retention": ["maxAgeSeconds": 3600, "maxEvents": 10],
                ]),
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for definition in definitions {
            let earlier = String(decoding: try encoder.encode(definition), as: UTF8.self)
            #expect(StoredDefinition.text(definition) == earlier)
            #expect(try StoredDefinition.stream(name: definition.name, text: earlier) == definition)
        }
    }
}
