import Foundation
import Synchronization
import Testing
import TocsinCore
import TocsinTesting
@testable import TocsinStore

/// What every `Store` must do, run on each store of `StoreFactory.all` (see there to add one):
/// definitions, gapless seqs under concurrent appends, all-or-nothing batches in order,
/// idempotent publish keys, durable subscriptions and acks, retention, a size limit with
/// `whenFull`, and the change feed. Each test uses the store only through the protocol.
@Suite(.timeLimit(.minutes(1)))
struct StoreConformanceTests {
    @Test(arguments: StoreFactory.all)
    func putStreamIsIdempotentAndGuardsTheSchema(_ factory: StoreFactory) async throws {
        try await factory.withStore { store in
            let (created, outcome) = try await store.putStream(Fixtures.stream, recreate: false)
            #expect(outcome == .created)
            let (same, again) = try await store.putStream(Fixtures.stream, recreate: false)
            #expect(again == .unchanged)
            #expect(same.epoch == created.epoch)
            var changed = Fixtures.stream
            changed.schema = try StreamSchema(fields: [FieldSpec(name: "m", type: .string)])
            await #expect(throws: TocsinError.self) { _ = try await store.putStream(changed, recreate: false) }
            _ = try await store.append(stream: "s", events: [#"{"n":1}"#])
            let (recreated, how) = try await store.putStream(changed, recreate: true)
            #expect(how == .recreated)
            #expect(recreated.epoch != created.epoch)
            #expect(recreated.lastSeq == 0)
            #expect(try await store.readEvents(stream: "s", after: 0, limit: 10).isEmpty)
        }
    }

    /// Definitions read back as they were put, after reopening too: every field option and
    /// retention setting of a stream, every part of a channel.
    @Test(arguments: StoreFactory.all)
    func definitionsReadBackAsPut(_ factory: StoreFactory) async throws {
        let stream = try StreamDefinition(
            name: "d",
            json: [
                "fields": [["name": "n", "type": "int"], ["name": "where", "type": "geo", "optional": true], ["name": "tags", "type": "list<string>"]],
                "retention": ["maxAgeSeconds": 3600, "maxEvents": 10, "whenFull": "dropOldest"],
            ])
        let channel = try ChannelDefinition(
            name: "c",
            json: [
                "stream": "d", "params": [["name": "min", "type": "int", "default": 2]], "where": "n >= $min", "mode": "repetitive",
                "period": "10s", "delivery": "notify",
            ])
        try await factory.withHome { home in
            do {
                let store = try await home.open(StoreOptions())
                _ = try await store.putStream(stream, recreate: false)
                #expect(try await store.putChannel(channel) == .created)
                #expect(try await store.putChannel(channel) == .unchanged)
            }
            let store = try await home.open(StoreOptions())
            #expect(try await store.streams().map(\.definition) == [stream])
            #expect(try await store.stream(named: "d")?.definition == stream)
            #expect(try await store.channels() == [channel])
            #expect(try await store.deleteChannel(named: "c"))
            #expect(try await store.channels().isEmpty)
        }
    }

    /// A dataset keeps the latest record per key, appends one change event per write to its
    /// change stream in the same transaction (its version is that stream's seq), reads back in
    /// key order across reopening, and guards its definition while it holds records.
    @Test(arguments: StoreFactory.all)
    func datasetsKeepTheLatestRecordPerKeyAndAVersionPerBatch(_ factory: StoreFactory) async throws {
        let shelters = try DatasetDefinition(
            name: "shelters",
            json: ["fields": [["name": "id", "type": "string"], ["name": "at", "type": "geo"], ["name": "open", "type": "bool", "optional": true]],
                   "key": "id", "index": ["at"]])
        let row = { (key: String, open: Bool) in
            DatasetRecordWrite(.upsert([.string(key), .geo(GeoPoint(lat: 1, lon: 2)), .bool(open)]), definition: shelters)
        }
        let delete = { (key: String) in DatasetRecordWrite(.delete(key: .string(key)), definition: shelters) }
        try await factory.withHome { home in
            do {
                let store = try await home.open(StoreOptions())
                #expect(try await store.putDataset(shelters) == .created)
                #expect(try await store.putDataset(shelters) == .unchanged)
                await #expect(throws: TocsinError.self) { _ = try await store.writeDataset("nope", writes: [row("a", true)]) }
                #expect(try await store.writeDataset("shelters", writes: [row("b", true), row("a", true), row("c", false)]) == 3)
                #expect(try await store.writeDataset("shelters", writes: [row("a", false), delete("c")]) == 5)
                #expect(try await store.writeDataset("shelters", writes: [delete("zz")]) == 6)
                let changes = try await store.readEvents(stream: "shelters.changes", after: 0, limit: 10)
                #expect(changes.map(\.seq) == Array(1...6))
                #expect(changes.map(\.json) == [row("b", true), row("a", true), row("c", false), row("a", false), delete("c"), delete("zz")].map(\.change))
                #expect(changes[4].json == #"{"change":"delete","id":"c"}"# || changes[4].json == #"{"id":"c","change":"delete"}"#)
                var redefined = shelters
                redefined.indexed = []
                await #expect(throws: TocsinError.self) { _ = try await store.putDataset(redefined) }
            }
            let store = try await home.open(StoreOptions())
            #expect(try await store.datasets() == [DatasetInfo(definition: shelters, version: 6, count: 2)])
            #expect(try await store.stream(named: "shelters.changes")?.lastSeq == 6)
            let page = try await store.readDataset("shelters", afterKey: nil, limit: 10)
            #expect(page.version == 6)
            #expect(page.records == [DatasetPage.Row(key: "\"a\"", body: row("a", false).body!), DatasetPage.Row(key: "\"b\"", body: row("b", true).body!)])
            #expect(try await store.readDataset("shelters", afterKey: "\"a\"", limit: 10).records.map(\.key) == ["\"b\""])
            #expect(try await store.readDataset("shelters", afterKey: nil, limit: 1).records.map(\.key) == ["\"a\""])
            await #expect(throws: TocsinError.self) { _ = try await store.readDataset("nope", afterKey: nil, limit: 1) }
            #expect(try await store.deleteDataset(named: "shelters"))
            #expect(try await store.datasets().isEmpty)
            #expect(try await store.stream(named: "shelters.changes") == nil)
            #expect(try await store.putDataset(shelters) == .created)
            #expect(try await store.readDataset("shelters", afterKey: nil, limit: 10) == DatasetPage(version: 0, records: []))
        }
    }

    @Test(arguments: StoreFactory.all)
    func concurrentAppendsGetGaplessSeqsAndAreGroupCommitted(_ factory: StoreFactory) async throws {
        try await factory.withStore { store in
            _ = try await store.putStream(Fixtures.stream, recreate: false)
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
    }

    @Test(arguments: StoreFactory.all)
    func appendToAMissingStreamFailsAlone(_ factory: StoreFactory) async throws {
        try await factory.withStore { store in
            _ = try await store.putStream(Fixtures.stream, recreate: false)
            async let good = store.append(stream: "s", events: [#"{"n":1}"#])
            async let bad = Result(catching: { try await store.append(stream: "missing", events: [#"{"n":1}"#]) })
            #expect(try await good.seqs == [1])
            let failure = await bad
            #expect(throws: TocsinError.self) { _ = try failure.get() }
        }
    }

    @Test(arguments: StoreFactory.all)
    func appendsWithoutWaitingCompleteInTheOrderMade(_ factory: StoreFactory) async throws {
        try await factory.withStore { store in
            _ = try await store.putStream(Fixtures.stream, recreate: false)
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
    }

    /// A traced publish's traceparent is stored with each of its events and read back with them
    /// (by the committing process's feed and by any reader); an untraced one's events have none.
    @Test(arguments: StoreFactory.all)
    func anAppendsTraceIsStoredWithEachOfItsEvents(_ factory: StoreFactory) async throws {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        try await factory.withStore { store in
            _ = try await store.putStream(Fixtures.stream, recreate: false)
            let fed = Mutex<[StoredEvent]>([])
            store.changes.consume(stream: "s") { _, events in fed.withLock { $0 += events } }
            _ = try await store.append(stream: "s", events: [#"{"n":1}"#, #"{"n":2}"#], key: nil, trace: trace)
            _ = try await store.append(stream: "s", events: [#"{"n":3}"#])
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                store.append(stream: "s", events: [#"{"n":4}"#], key: "k", trace: trace) { _ in done.resume() }
            }
            let read = try await store.readEvents(stream: "s", after: 0, limit: 10)
            #expect(read.map(\.trace) == [trace, trace, nil, trace])
            #expect(fed.withLock { $0.map(\.trace) } == [trace, trace, nil, trace], "the feed's events carry it too")
        }
    }

    /// (Appends with one key queued into one transaction: `SQLiteStoreTests`.)
    @Test(arguments: StoreFactory.all)
    func anAppendWithAStoredKeyStoresNothingAndGetsTheFirstSeqs(_ factory: StoreFactory) async throws {
        try await factory.withHome { home in
            do {
                let store = try await home.open(StoreOptions())
                _ = try await store.putStream(Fixtures.stream, recreate: false)
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
            }

            // Survives reopening the store (it is in the database, not in memory).
            let reopened = try await home.open(StoreOptions())
            #expect(try await reopened.append(stream: "s", events: [#"{"n":6}"#], key: "k1").duplicate)

            // A recreated stream forgets its keys with its events.
            _ = try await reopened.putStream(Fixtures.stream, recreate: true)
            #expect(try await reopened.append(stream: "s", events: [#"{"n":7}"#], key: "k1") == Appended(epoch: try #require(await reopened.stream(named: "s")).epoch, seqs: [1]))
        }
    }

    /// (That retention deletes the keys past the window: `SQLiteStoreTests`.)
    @Test(arguments: StoreFactory.all)
    func publishKeysAreForgottenAfterTheWindow(_ factory: StoreFactory) async throws {
        let clock = TestClock()
        try await factory.withStore(StoreOptions(publishKeyWindow: .milliseconds(300), nowMillis: clock.now)) { store in
            _ = try await store.putStream(Fixtures.stream, recreate: false)
            #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k").seqs == [1])
            clock.advance(byMillis: 299)
            #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k").duplicate, "still within the window")
            clock.advance(byMillis: 2)
            // Checked by age at append: stored again, and remembered again.
            #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k") == Appended(epoch: try #require(await store.stream(named: "s")).epoch, seqs: [2]))
            #expect(try await store.append(stream: "s", events: [#"{"n":1}"#], key: "k").duplicate)
        }
    }

    @Test(arguments: StoreFactory.all)
    func subscriptionsAreDurableAndAcksOnlyMoveForward(_ factory: StoreFactory) async throws {
        try await factory.withHome { home in
            do {
                let store = try await home.open(StoreOptions())
                let (info, _) = try await store.putStream(Fixtures.stream, recreate: false)
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
            let store = try await home.open(StoreOptions())
            let subs = try await store.subscriptions(client: "c")
            #expect(subs.count == 1)
            #expect(subs[0].ackedSeq == 7)
            #expect(subs[0].params == ["k": 1])
            #expect(try await store.deleteSubscription(id: subs[0].id))
            #expect(try await store.subscriptions(client: "c").isEmpty)
        }
    }

    @Test(arguments: StoreFactory.all)
    func aFullStoreRefusesAnAppendWholeAndReusesWhatRetentionFrees(_ factory: StoreFactory) async throws {
        let limit: Int64 = 256 << 10
        try await factory.withStore(StoreOptions(maxBytes: limit)) { store in
            _ = try await store.putStream(Fixtures.big, recreate: false)
            var stored: Int64 = 0
            var refusal: TocsinError?
            for _ in 0..<200 {
                do {
                    stored = try await store.append(stream: "big", events: [Fixtures.text(4000), Fixtures.text(4000)]).seqs.last!
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
            // Retention keeps 5 events; the room it frees takes new ones, and seqs go on without a gap.
            _ = try await store.enforceRetention(nowMillis: WallClock.nowMillis())
            let freed = try await store.usage()
            #expect(freed.usedBytes < usage.usedBytes / 2, "\(freed) after \(usage)")
            for round in 0..<3 {
                let next = try await store.append(stream: "big", events: [Fixtures.text(4000), Fixtures.text(4000)])
                #expect(next.seqs == [stored + 1 + 2 * Int64(round), stored + 2 + 2 * Int64(round)])
            }
            #expect(try await store.usage().allocatedBytes <= limit)
        }
    }

    /// A stream set to `whenFull: dropOldest` keeps taking publishes in a full store, dropping its
    /// oldest events; a `refuse` stream beside it is refused, and gets room only from its own retention.
    @Test(arguments: StoreFactory.all)
    func aDropOldestStreamMakesRoomFromItsOwnHistoryAndOnlyThere(_ factory: StoreFactory) async throws {
        let limit: Int64 = 256 << 10
        try await factory.withStore(StoreOptions(maxBytes: limit)) { store in
            _ = try await store.putStream(Fixtures.ring, recreate: false)
            _ = try await store.putStream(Fixtures.big, recreate: false)
            // Six times what the store holds, all accepted, in order, without a gap.
            var seqs: [Int64] = []
            for _ in 0..<200 { seqs += try await store.append(stream: "ring", events: [Fixtures.text(4000), Fixtures.text(4000)]).seqs }
            #expect(seqs == Array(1...400))
            let ring = try #require(try await store.stream(named: "ring"))
            #expect(ring.lastSeq == 400)
            #expect(ring.firstSeq > 100, "the oldest were dropped")
            #expect(try await store.readEvents(stream: "ring", after: 0, limit: 1000).map(\.seq) == Array(ring.firstSeq...400))
            #expect(try await store.usage().allocatedBytes <= limit)
            // The refuse stream fills what is left, then is refused: the ring's history is not its to drop.
            let bigStored = try await Fixtures.fill(store)
            #expect(try await store.stream(named: "big")?.lastSeq == bigStored)
            #expect(try await store.stream(named: "ring")?.firstSeq == ring.firstSeq, "big's publishes dropped nothing of ring")
            // The ring still takes what big was just refused, making room from its own history.
            #expect(try await store.append(stream: "ring", events: [Fixtures.text(4000), Fixtures.text(4000)]).seqs == [401, 402])
            #expect(try #require(try await store.stream(named: "ring")).firstSeq > ring.firstSeq)
        }
    }

    /// Making room and storing are one transaction: a publish that does not fit even after the
    /// drops is refused with the stream's history intact.
    @Test(arguments: StoreFactory.all)
    func aPublishThatCannotFitEvenAfterDroppingDropsNothing(_ factory: StoreFactory) async throws {
        try await factory.withStore(StoreOptions(maxBytes: 256 << 10)) { store in
            _ = try await store.putStream(Fixtures.ring, recreate: false)
            _ = try await store.putStream(Fixtures.big, recreate: false)
            _ = try await store.append(stream: "ring", events: Array(repeating: Fixtures.text(100), count: 5))
            _ = try await Fixtures.fill(store)
            await #expect(throws: TocsinError.storeFull(maxBytes: 256 << 10)) {
                _ = try await store.append(stream: "ring", events: Array(repeating: Fixtures.text(4000), count: 80))
            }
            #expect(try await store.readEvents(stream: "ring", after: 0, limit: 100).map(\.seq) == Array(1...5))
            #expect(try await store.stream(named: "ring")?.firstSeq == 1)
        }
    }

    @Test(arguments: StoreFactory.all)
    func aDropOldestStreamWithNothingToDropIsRefused(_ factory: StoreFactory) async throws {
        try await factory.withStore(StoreOptions(maxBytes: 256 << 10)) { store in
            _ = try await store.putStream(Fixtures.ring, recreate: false)
            _ = try await store.putStream(Fixtures.big, recreate: false)
            _ = try await Fixtures.fill(store)
            let error = await #expect(throws: TocsinError.self) {
                _ = try await store.append(stream: "ring", events: [Fixtures.text(4000), Fixtures.text(4000)])
            }
            #expect(error?.code == .storeFull)
            #expect(try await store.stream(named: "ring")?.lastSeq == 0)
        }
    }

    @Test(arguments: StoreFactory.all)
    func retentionKeepsTheNewestEvents(_ factory: StoreFactory) async throws {
        try await factory.withStore { store in
            _ = try await store.putStream(Fixtures.stream, recreate: false)
            for i in 0..<12 { _ = try await store.append(stream: "s", events: [#"{"n":\#(i)}"#]) }
            let deleted = try await store.enforceRetention(nowMillis: WallClock.nowMillis())
            #expect(deleted == 7)
            let info = try #require(try await store.stream(named: "s"))
            #expect(info.firstSeq == 8)
            #expect(info.lastSeq == 12)
            #expect(try await store.readEvents(stream: "s", after: 0, limit: 100).map(\.seq) == Array(8...12))
        }
    }

    @Test(arguments: StoreFactory.all)
    func changeFeedWakesWaiters(_ factory: StoreFactory) async throws {
        try await factory.withStore { store in
            _ = try await store.putStream(Fixtures.stream, recreate: false)
            async let woke: Void = store.changes.wait(stream: "s", after: 0)
            _ = try await store.append(stream: "s", events: [#"{"n":1}"#])
            await woke
            #expect(store.changes.lastSeq(of: "s") == 1)
        }
    }
}
