import Foundation
import Testing
import TocsinClient
import TocsinCore
import TocsinHTTPClient
import TocsinStore
import TocsinTesting

@testable import TocsinBroker

/// The notify-then-fetch result cache: subscribers of one interest are served from one
/// computation, a page is never served past events that arrived after it, and the bounds hold.
@Suite(.timeLimit(.minutes(1)))
struct ResultCacheTests {
    static func key(_ after: Int64, lastSeq: Int64 = 10, params: [Value] = [.string("fire")]) -> ResultCache.Key {
        ResultCache.Key(channel: "c", params: params, epoch: "e", lastSeq: lastSeq, after: after, limit: 100, maxScan: 50_000)
    }

    static func page(_ seqs: [Int64], bytes: Int = 10) -> ResultCache.Page {
        ResultCache.Page(events: seqs.map { EventPayload(seq: $0, json: String(repeating: "x", count: bytes)) }, seq: seqs.last ?? 0)
    }

    @Test func boundsHoldAndTheOldestGoesFirst() {
        let cache = ResultCache(maxEntries: 3, maxBytes: 1 << 20)
        for after in 0..<5 { cache.store(Self.page([Int64(after) + 1]), for: Self.key(Int64(after))) }
        #expect(cache.count == 3)
        #expect(cache.evictions.load(ordering: .relaxed) == 2)
        #expect(cache.page(Self.key(0)) == nil && cache.page(Self.key(1)) == nil)
        #expect(cache.page(Self.key(4))?.seq == 5)
        #expect(cache.page(Self.key(4, lastSeq: 11)) == nil, "another stream position is another page")
        #expect(cache.page(Self.key(4, params: [.string("flood")])) == nil, "another interest is another page")
        #expect(cache.hits.load(ordering: .relaxed) == 1 && cache.misses.load(ordering: .relaxed) == 4)
        // Replacing a key does not grow the cache; bytes bound too.
        cache.store(Self.page([5]), for: Self.key(4))
        #expect(cache.count == 3)
        let small = ResultCache(maxEntries: 100, maxBytes: 1_000)
        for after in 0..<20 { small.store(Self.page([1, 2, 3], bytes: 100), for: Self.key(Int64(after))) }
        #expect(small.count <= 2 && small.count >= 1)
        small.store(Self.page(Array(1...20), bytes: 100), for: Self.key(99))
        #expect(small.page(Self.key(99)) == nil, "a page bigger than the whole cache is not kept")
        let off = ResultCache(maxEntries: 0, maxBytes: 1_000)
        off.store(Self.page([1]), for: Self.key(0))
        #expect(off.page(Self.key(0)) == nil && off.misses.load(ordering: .relaxed) == 0)
    }

    /// Twenty notify subscribers of one interest fetch after the same publishes: one computes.
    @Test func subscribersOfOneInterestShareAComputation() async throws {
        try await TestBroker.with { broker in
            _ = try await HTTPCall.call(.PUT, broker.httpURL + "/v1/streams/r", body: ["fields": [["name": "k", "type": "string"]]])
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/channels/ByKind",
                body: ["stream": "r", "params": [["name": "k", "type": "string"]], "where": "k == $k", "delivery": "notify"])
            let cache = broker.broker.publishing.results
            let seqs = try await withThrowingTaskGroup(of: [Int64].self) { group in
                let ready = AsyncStream.makeStream(of: Void.self)
                for i in 0..<20 {
                    group.addTask {
                        try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                            let inbox = Inbox(connection)
                            _ = try await connection.hello(client: "c\(i)")
                            let id = try await connection.subscribe(channel: "ByKind", params: ["k": "fire"]).subscription
                            ready.continuation.yield()
                            _ = try await inbox.notifications(3)
                            let page = try await connection.fetch(subscription: id, after: 0)
                            return page.events.map(\.seq)
                        }
                    }
                }
                var subscribed = 0
                for await _ in ready.stream {
                    subscribed += 1
                    if subscribed == 20 { break }
                }
                for kind in ["fire", "flood", "fire", "fire"] {
                    _ = try await HTTPCall.call(.POST, broker.httpURL + "/v1/streams/r/events", body: ["k": .string(kind)])
                }
                var all: [[Int64]] = []
                for try await s in group { all.append(s) }
                return all
            }
            #expect(seqs.allSatisfy { $0 == [1, 3, 4] })
            #expect(cache.misses.load(ordering: .relaxed) == 1, "one computation")
            #expect(cache.hits.load(ordering: .relaxed) == 19)
            // A publish after the page was computed: the next fetch sees it.
            _ = try await HTTPCall.call(.POST, broker.httpURL + "/v1/streams/r/events", body: ["k": "fire"])
            let fresh = try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                _ = try await connection.hello(client: "c0")
                let id = try await connection.subscribe(channel: "ByKind", params: ["k": "fire"]).subscription
                return try await connection.fetch(subscription: id, after: 0).events.map(\.seq)
            }
            #expect(fresh == [1, 3, 4, 5])
        }
    }

    /// A channel whose condition reads the clock is computed at each fetch, never cached.
    @Test func pagesOfChannelsThatReadTheClockAreNotCached() async throws {
        try await TestBroker.with { broker in
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/streams/t", body: ["fields": [["name": "at", "type": "time"]]])
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/channels/Recent", body: ["stream": "t", "where": "at >= now() - 1h", "delivery": "notify"])
            _ = try await HTTPCall.call(
                .PUT, broker.httpURL + "/v1/channels/Any", body: ["stream": "t", "where": "at != null", "delivery": "notify"])
            #expect(broker.broker.catalog.channel("Recent")?.readsClock == true)
            #expect(broker.broker.catalog.channel("Any")?.readsClock == false)
            let cache = broker.broker.publishing.results
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                _ = try await connection.hello(client: "c")
                let recent = try await connection.subscribe(channel: "Recent", params: [:]).subscription
                let any = try await connection.subscribe(channel: "Any", params: [:]).subscription
                _ = try await connection.publish(stream: "t", events: [["at": .string(TimeFormat.format(WallClock.nowMillis()))]])
                for _ in 0..<2 {
                    #expect(try await connection.fetch(subscription: recent, after: 0).events.count == 1)
                    #expect(try await connection.fetch(subscription: any, after: 0).events.count == 1)
                }
            }
            #expect(cache.misses.load(ordering: .relaxed) == 1 && cache.hits.load(ordering: .relaxed) == 1, "only Any's pages were cached")
        }
    }
}
