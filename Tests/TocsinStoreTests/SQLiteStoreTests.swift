import Foundation
import Synchronization
import Testing
import TocsinCore
import TocsinTesting
@testable import TocsinStore

@Suite(.timeLimit(.minutes(1)))
final class SQLiteStoreTests {
    let directory = NSTemporaryDirectory() + "tocsin-store-\(UUID().uuidString)"
    var path: String { directory + "/db.sqlite" }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func open() throws -> SQLiteStore {
        try SQLiteStore(configuration: .init(path: path, synchronousFull: false))
    }

    static let stream = try! StreamDefinition(
        name: "s", json: ["fields": [["name": "n", "type": "int"]], "retention": ["maxEvents": 5]])

    @Test func putStreamIsIdempotentAndGuardsTheSchema() async throws {
        let store = try open()
        let (created, outcome) = try await store.putStream(Self.stream, recreate: false)
        #expect(outcome == .created)
        let (same, again) = try await store.putStream(Self.stream, recreate: false)
        #expect(again == .unchanged)
        #expect(same.epoch == created.epoch)
        var changed = Self.stream
        changed.schema = try StreamSchema(fields: [FieldSpec(name: "m", type: .string)])
        await #expect(throws: TocsinError.self) { _ = try await store.putStream(changed, recreate: false) }
        _ = try await store.append(stream: "s", events: [#"{"n":1}"#])
        let (recreated, how) = try await store.putStream(changed, recreate: true)
        #expect(how == .recreated)
        #expect(recreated.epoch != created.epoch)
        #expect(recreated.lastSeq == 0)
        #expect(try await store.readEvents(stream: "s", after: 0, limit: 10).isEmpty)
    }

    @Test func concurrentAppendsGetGaplessSeqsAndAreGroupCommitted() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        let results = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for p in 0..<16 {
                group.addTask {
                    var seqs: [Int64] = []
                    for i in 0..<50 {
                        let s = try await store.append(stream: "s", events: [#"{"n":\#(p * 1000 + i)}"#, #"{"n":-1}"#]).seqs
                        #expect(s.count == 2 && s[1] == s[0] + 1, "a batch's seqs are consecutive")
                        seqs += s
                    }
                    return seqs
                }
            }
            var all: [[Int64]] = []
            for try await r in group { all.append(r) }
            return all
        }
        for seqs in results { #expect(seqs == seqs.sorted(), "one publisher's seqs increase") }
        let all = results.flatMap { $0 }.sorted()
        #expect(all == Array(1...1600))
        let events = try await store.readEvents(stream: "s", after: 0, limit: 10_000)
        #expect(events.map(\.seq) == Array(1...1600))
        #expect(store.changes.lastSeq(of: "s") == 1600)
    }

    @Test func appendToAMissingStreamFailsAlone() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        async let good = store.append(stream: "s", events: [#"{"n":1}"#])
        async let bad = Result(catching: { try await store.append(stream: "missing", events: [#"{"n":1}"#]) })
        #expect(try await good.seqs == [1])
        let failure = await bad
        #expect(throws: TocsinError.self) { _ = try failure.get() }
    }

    @Test func appendsWithoutWaitingCompleteInTheOrderMade() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        // 200 appends queued from one task without waiting (they share commits); every 10th
        // names a stream that does not exist and fails alone, in its place.
        let outcomes = Mutex<[(index: Int, seqs: [Int64]?)]>([])
        let done = Mutex<CheckedContinuation<Void, Never>?>(nil)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            done.withLock { $0 = continuation }
            for i in 0..<200 {
                store.append(stream: i % 10 == 9 ? "missing" : "s", events: [#"{"n":\#(i)}"#], key: nil) { result in
                    let count = outcomes.withLock { o in
                        o.append((i, try? result.get().seqs))
                        return o.count
                    }
                    if count == 200 { done.withLock { $0 }?.resume() }
                }
            }
        }
        let got = outcomes.withLock { $0 }
        #expect(got.map(\.index) == Array(0..<200), "completions come in the order the appends were made")
        #expect(got.filter { $0.seqs == nil }.map(\.index) == Array(stride(from: 9, to: 200, by: 10)))
        #expect(got.compactMap(\.seqs).flatMap { $0 } == Array(1...180))
        #expect(try await store.readEvents(stream: "s", after: 0, limit: 500).map(\.seq) == Array(1...180))
    }

    @Test func anAppendWithAStoredKeyStoresNothingAndGetsTheFirstSeqs() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        let other = try StreamDefinition(name: "t", json: ["fields": [["name": "n", "type": "int"]]])
        _ = try await store.putStream(other, recreate: false)
        let first = try await store.append(stream: "s", events: [#"{"n":1}"#, #"{"n":2}"#], key: "k1")
        #expect(first == Appended(epoch: first.epoch, seqs: [1, 2], duplicate: false))
        let again = try await store.append(stream: "s", events: [#"{"n":99}"#], key: "k1")
        #expect(again == Appended(epoch: first.epoch, seqs: [1, 2], duplicate: true), "the first publish's seqs, whatever the second carries")
        #expect(try await store.append(stream: "t", events: [#"{"n":1}"#], key: "k1").duplicate == false, "keys are per stream")
        #expect(try await store.append(stream: "s", events: [#"{"n":3}"#]).seqs == [3], "no key: always stored")
        #expect(try await store.readEvents(stream: "s", after: 0, limit: 10).map(\.json) == [#"{"n":1}"#, #"{"n":2}"#, #"{"n":3}"#])
        #expect(store.changes.lastSeq(of: "s") == 3, "a duplicate tells the feed nothing")

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

        // Survives reopening the store (it is in the database, not in memory).
        let reopened = try open()
        #expect(try await reopened.append(stream: "s", events: [#"{"n":6}"#], key: "k1").duplicate)

        // A recreated stream forgets its keys with its events.
        _ = try await reopened.putStream(Self.stream, recreate: true)
        #expect(try await reopened.append(stream: "s", events: [#"{"n":7}"#], key: "k1") == Appended(epoch: try #require(await reopened.stream(named: "s")).epoch, seqs: [1]))
    }

    @Test func publishKeysAreForgottenAfterTheWindow() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, publishKeyWindow: .milliseconds(300)))
        _ = try await store.putStream(Self.stream, recreate: false)
        let stored = TimeFormat.nowMillis()
        #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k").seqs == [1])
        #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k").duplicate)
        try await TocsinTesting.waitUntil("the key's window has passed") { TimeFormat.nowMillis() > stored + 400 }
        // Checked by age at append: stored again, and remembered again.
        #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k") == Appended(epoch: try #require(await store.stream(named: "s")).epoch, seqs: [2]))
        #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k").duplicate)
        // Retention deletes the rows of keys past the window.
        _ = try await store.enforceRetention(nowMillis: TimeFormat.nowMillis() + 1_000)
        #expect(try await store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM publish_keys") } == 0)
    }

    @Test func subscriptionsAreDurableAndAcksOnlyMoveForward() async throws {
        do {
            let store = try open()
            let (info, _) = try await store.putStream(Self.stream, recreate: false)
            let start = StreamPosition(epoch: info.epoch, seq: 0)
            let (a, created) = try await store.openSubscription(client: "c", channel: "ch", params: ["k": 1], initial: start)
            #expect(created)
            let (b, createdAgain) = try await store.openSubscription(client: "c", channel: "ch", params: ["k": 1], initial: start)
            #expect(!createdAgain)
            #expect(a.id == b.id)
            try await store.saveAcks([a.id: StreamPosition(epoch: info.epoch, seq: 7)])
            try await store.saveAcks([a.id: StreamPosition(epoch: info.epoch, seq: 3)])
        }
        // Reopen: everything is still there.
        let store = try open()
        let subs = try await store.subscriptions(client: "c")
        #expect(subs.count == 1)
        #expect(subs[0].ackedSeq == 7)
        #expect(subs[0].params == ["k": 1])
        #expect(try await store.deleteSubscription(id: subs[0].id))
        #expect(try await store.subscriptions(client: "c").isEmpty)
    }

    static let big = try! StreamDefinition(
        name: "big", json: ["fields": [["name": "text", "type": "string"]], "retention": ["maxEvents": 5]])
    static func text(_ bytes: Int) -> String { #"{"text":"\#(String(repeating: "x", count: bytes))"}"# }

    @Test func aFullStoreRefusesAnAppendWholeAndReusesWhatRetentionFrees() async throws {
        let limit: Int64 = 256 << 10
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: limit))
        _ = try await store.putStream(Self.big, recreate: false)
        var stored: Int64 = 0
        var refusal: TocsinError?
        for _ in 0..<200 {
            do {
                stored = try await store.append(stream: "big", events: [Self.text(4000), Self.text(4000)]).seqs.last!
            } catch let error as TocsinError {
                refusal = error
                break
            }
        }
        #expect(refusal?.code == .storeFull)
        #expect(refusal?.message.contains("\(limit) bytes") == true)
        #expect(stored > 10, "the limit, not something else, stopped it")
        // Nothing of the refused append is stored, not even its first event.
        #expect(try await store.stream(named: "big")?.lastSeq == stored)
        #expect(try await store.readEvents(stream: "big", after: 0, limit: 1000).map(\.seq) == Array(1...stored))
        let usage = try await store.usage()
        #expect(usage.maxBytes == limit)
        #expect(usage.allocatedBytes <= limit)
        #expect(usage.usedBytes > limit / 2)
        // Retention keeps 5 events; the pages it frees take new ones, and seqs go on without a gap.
        _ = try await store.enforceRetention(nowMillis: TimeFormat.nowMillis())
        let freed = try await store.usage()
        #expect(freed.usedBytes < usage.usedBytes / 2, "\(freed) after \(usage)")
        for round in 0..<3 {
            let next = try await store.append(stream: "big", events: [Self.text(4000), Self.text(4000)])
            #expect(next.seqs == [stored + 1 + 2 * Int64(round), stored + 2 + 2 * Int64(round)])
        }
        #expect(try await store.usage().allocatedBytes <= limit)
    }

    /// Appends queued together share a transaction; one too big for the room left must fail
    /// alone, not take the others down with it.
    @Test func anAppendTooBigForTheRoomLeftFailsAloneNotTheAppendsCommittedWithIt() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: 256 << 10))
        _ = try await store.putStream(Self.big, recreate: false)
        // The writer is held; the commit thread takes the first append and waits for the writer
        // while the other two queue behind it, so those two share the next transaction.
        let holding = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            store.pool.writeWithoutTransaction { _ in
                holding.signal()
                release.wait()
            }
        }
        holding.wait()
        let appends: [[String]] = [Array(repeating: Self.text(10), count: 500), Array(repeating: Self.text(4000), count: 100), [Self.text(10)]]
        let outcomes = Mutex<[Int: Result<Appended, any Error>]>([:])
        let all = Mutex<CheckedContinuation<Void, Never>?>(nil)
        for (i, events) in appends.enumerated() {
            store.append(stream: "big", events: events, key: nil) { result in
                let count = outcomes.withLock { o in
                    o[i] = result
                    return o.count
                }
                if count == appends.count { all.withLock { $0 }?.resume() }
            }
            if i == 0 { try await TocsinTesting.waitUntil("the commit thread took the first append") { store.committer.queued == 0 } }
        }
        try await TocsinTesting.waitUntil("the last two appends queue behind the held writer") { store.committer.queued == 2 }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            all.withLock { $0 = continuation }
            release.signal()
        }
        let got = outcomes.withLock { $0 }
        #expect(try got[0]?.get().seqs == Array(1...500))
        #expect(throws: TocsinError.self) { try got[1]?.get() }
        if case .failure(let error as TocsinError)? = got[1] { #expect(error.code == .storeFull) }
        #expect(try got[2]?.get().seqs == [501])
        #expect(try await store.readEvents(stream: "big", after: 0, limit: 1000).map(\.seq) == Array(1...501))
    }

    static let ring = try! StreamDefinition(
        name: "ring", json: ["fields": [["name": "text", "type": "string"]], "retention": ["whenFull": "dropOldest"]])

    /// A stream set to `whenFull: dropOldest` keeps taking publishes in a full store, dropping its
    /// oldest events; a `refuse` stream beside it is refused, and gets room only from its own retention.
    @Test func aDropOldestStreamMakesRoomFromItsOwnHistoryAndOnlyThere() async throws {
        let limit: Int64 = 256 << 10
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: limit))
        _ = try await store.putStream(Self.ring, recreate: false)
        _ = try await store.putStream(Self.big, recreate: false)
        // Six times what the store holds, all accepted, in order, without a gap.
        var seqs: [Int64] = []
        for _ in 0..<200 { seqs += try await store.append(stream: "ring", events: [Self.text(4000), Self.text(4000)]).seqs }
        #expect(seqs == Array(1...400))
        let ring = try #require(try await store.stream(named: "ring"))
        #expect(ring.lastSeq == 400)
        #expect(ring.firstSeq > 100, "the oldest were dropped")
        #expect(try await store.readEvents(stream: "ring", after: 0, limit: 1000).map(\.seq) == Array(ring.firstSeq...400))
        #expect(try await store.usage().allocatedBytes <= limit)
        // The refuse stream fills what is left, then is refused: the ring's history is not its to drop.
        let bigStored = try await fill(store)
        #expect(try await store.stream(named: "big")?.lastSeq == bigStored)
        #expect(try await store.stream(named: "ring")?.firstSeq == ring.firstSeq, "big's publishes dropped nothing of ring")
        // The ring still takes what big was just refused, making room from its own history.
        #expect(try await store.append(stream: "ring", events: [Self.text(4000), Self.text(4000)]).seqs == [401, 402])
        #expect(try #require(try await store.stream(named: "ring")).firstSeq > ring.firstSeq)
    }

    /// Making room and storing are one transaction: a publish that does not fit even after the
    /// drops is refused with the stream's history intact.
    @Test func aPublishThatCannotFitEvenAfterDroppingDropsNothing() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: 256 << 10))
        _ = try await store.putStream(Self.ring, recreate: false)
        _ = try await store.putStream(Self.big, recreate: false)
        _ = try await store.append(stream: "ring", events: Array(repeating: Self.text(100), count: 5))
        _ = try await fill(store)
        await #expect(throws: TocsinError.storeFull(maxBytes: 256 << 10)) {
            _ = try await store.append(stream: "ring", events: Array(repeating: Self.text(4000), count: 80))
        }
        #expect(try await store.readEvents(stream: "ring", after: 0, limit: 100).map(\.seq) == Array(1...5))
        #expect(try await store.stream(named: "ring")?.firstSeq == 1)
    }

    @Test func aDropOldestStreamWithNothingToDropIsRefused() async throws {
        let store = try SQLiteStore(configuration: .init(path: path, synchronousFull: false, maxBytes: 256 << 10))
        _ = try await store.putStream(Self.ring, recreate: false)
        _ = try await store.putStream(Self.big, recreate: false)
        _ = try await fill(store)
        let error = await #expect(throws: TocsinError.self) {
            _ = try await store.append(stream: "ring", events: [Self.text(4000), Self.text(4000)])
        }
        #expect(error?.code == .storeFull)
        #expect(try await store.stream(named: "ring")?.lastSeq == 0)
    }

    /// Appends two 4 KB events at a time until the store refuses them; returns the last seq stored.
    func fill(_ store: SQLiteStore) async throws -> Int64 {
        var stored: Int64 = 0
        for _ in 0..<1000 {
            do {
                stored = try await store.append(stream: "big", events: [Self.text(4000), Self.text(4000)]).seqs.last!
            } catch let error as TocsinError where error.code == .storeFull {
                return stored
            }
        }
        throw TestFailure("the store never filled")
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
        _ = try await store.enforceRetention(nowMillis: TimeFormat.nowMillis())
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
        _ = try await store.enforceRetention(nowMillis: TimeFormat.nowMillis())
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

    @Test func retentionKeepsTheNewestEvents() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        for i in 0..<12 { _ = try await store.append(stream: "s", events: [#"{"n":\#(i)}"#]) }
        let deleted = try await store.enforceRetention(nowMillis: TimeFormat.nowMillis())
        #expect(deleted == 7)
        let info = try #require(try await store.stream(named: "s"))
        #expect(info.firstSeq == 8)
        #expect(info.lastSeq == 12)
        #expect(try await store.readEvents(stream: "s", after: 0, limit: 100).map(\.seq) == Array(8...12))
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

    static let unbounded = try! StreamDefinition(name: "u", json: ["fields": [["name": "n", "type": "int"]]])

    /// Polls `condition` until it holds, for at most 10 s.
    func waitUntil(_ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while try await !condition() {
            guard ContinuousClock.now < deadline else { Issue.record("condition not met within 10 s"); return }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func changeFeedWakesWaiters() async throws {
        let store = try open()
        _ = try await store.putStream(Self.stream, recreate: false)
        async let woke: Void = store.changes.wait(stream: "s", after: 0)
        _ = try await store.append(stream: "s", events: [#"{"n":1}"#])
        await woke
        #expect(store.changes.lastSeq(of: "s") == 1)
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
