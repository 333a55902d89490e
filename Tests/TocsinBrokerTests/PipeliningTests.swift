import Foundation
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

@testable import TocsinBroker
@testable import TocsinStore

@Suite(.timeLimit(.minutes(1)))
struct PipeliningTests {
    /// 120 frames sent without waiting for any reply, through a window of 8 publishes (or of 1
    /// byte, or a broker-wide budget of 1 byte: one publish at a time): good publishes, bad ones, a ping, a malformed frame, a bad
    /// ack and a subscribe among them. Every reply comes in request order, seqs follow one another, and
    /// the subscribe (which waits for the publishes before it) starts after all of them.
    @Test(arguments: [(8, 8 << 20, 256 << 20), (256, 1, 256 << 20), (256, 8 << 20, 1)])
    func pipelinedRequestsAreAnsweredInTheOrderSent(window: (count: Int, bytes: Int, total: Int)) async throws {
        try await TestBroker.with({
            $0.maxPipelinedPublishes = window.count
            $0.maxPipelinedPublishBytes = window.bytes
            $0.maxPipelinedPublishBytesTotal = window.total
        }) { broker in
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                try await connection.send(text: #"{"type":"hello","id":"h","client":"pipeliner"}"#)
                let event = emergency("flood", severity: 2).serialized
                enum Expect { case published, error(String?, String), pong, subscribed }
                var expected: [Expect] = []
                var goodBefore = 0  // good publishes sent before the subscribe
                for i in 0..<120 {
                    switch i {
                    case 30:
                        try await connection.send(text: #"{"type":"publish","id":"p\#(i)","stream":"nowhere","event":\#(event)}"#)
                        expected.append(.error("p\(i)", "unknown_stream"))
                    case 31:
                        try await connection.send(text: #"{"type":"publish","id":"p\#(i)","stream":"emergencies","event":{"kind":"fire"}}"#)
                        expected.append(.error("p\(i)", "schema_violation"))
                    case 50:
                        try await connection.send(text: #"{"type":"ping","id":"p\#(i)"}"#)
                        expected.append(.pong)
                    case 60:
                        try await connection.send(text: "{not json")
                        expected.append(.error(nil, "bad_json"))
                    case 90:
                        try await connection.send(text: #"{"type":"ack","id":"p\#(i)","subscription":"s_nope","seq":1}"#)
                        expected.append(.error("p\(i)", "unknown_subscription"))
                    case 70:
                        try await connection.send(
                            text: #"{"type":"subscribe","id":"p\#(i)","channel":"EmergenciesOfKind","params":{"kind":"fire"},"from":"latest"}"#)
                        expected.append(.subscribed)
                        goodBefore = expected.filter { if case .published = $0 { true } else { false } }.count
                    default:
                        try await connection.send(text: #"{"type":"publish","id":"p\#(i)","stream":"emergencies","event":\#(event)}"#)
                        expected.append(.published)
                    }
                }
                guard case .welcome = try await inbox.next() else { throw TestFailure("expected welcome first") }
                var lastSeq: Int64 = 0
                for (i, want) in expected.enumerated() {
                    let reply = try await inbox.next()
                    switch (want, reply) {
                    case (.published, .published(let id, _, _, let seqs, _)):
                        #expect(id == "p\(i)")
                        #expect(seqs == [lastSeq + 1], "one seq after the last")
                        lastSeq = seqs.last ?? lastSeq
                    case (.error(let wantID, let wantCode), .error(let id, let code, _, _)):
                        #expect(id == wantID)
                        #expect(code == wantCode)
                    case (.pong, .pong(let id)):
                        #expect(id == "p\(i)")
                    case (.subscribed, .subscribed(let id, let info)):
                        #expect(id == "p\(i)")
                        #expect(info.position.seq == Int64(goodBefore), "the subscribe saw every publish sent before it")
                    default:
                        throw TestFailure("reply \(i): expected \(want), got \(reply.encoded)")
                    }
                }
                #expect(lastSeq == Int64(expected.count - 6))
                #expect(await inbox.isQuiet(for: .milliseconds(100)))
            }
        }
    }

    /// While something else holds the store's writer (here: a write that waits for the test), a
    /// connection's publishes keep being read and queue up behind it; once the writer is free
    /// they are committed together, in a few transactions, not one each.
    @Test func publishesInFlightTogetherShareCommits() async throws {
        try await TestBroker.with { broker in
            let store = try #require(broker.broker.store as? SQLiteStore)
            let writer = try await HeldWriter(store)
            let commitsBefore = store.commitCount
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                let event = emergency("fire", severity: 1).serialized
                var bytes = 0
                for i in 0..<50 {
                    let publish = #"{"type":"publish","id":"p\#(i)","stream":"emergencies","event":\#(event)}"#
                    bytes += publish.utf8.count
                    try await connection.send(text: publish)
                }
                try await connection.send(text: #"{"type":"ping","id":"after"}"#)
                // All 50 read and waiting for the writer (however slowly the machine runs them)...
                let queued = bytes
                try await waitUntil("the 50 publishes are queued behind the held writer") {
                    broker.broker.publishBudget.used == queued
                }
                // ...and the ping is answered only after every publish: none is answered while the writer is held.
                #expect(await inbox.isQuiet(for: .milliseconds(200)))
                writer.release()
                for i in 0..<50 {
                    guard case .published(let id, _, _, let seqs, false) = try await inbox.next() else { throw TestFailure("expected published") }
                    #expect(id == "p\(i)" && seqs == [Int64(i + 1)])
                }
                guard case .pong("after") = try await inbox.next() else { throw TestFailure("expected the pong last") }
            }
            try await writer.released()
            let commits = store.commitCount - commitsBefore
            #expect(commits <= 3, "50 publishes in flight together went into \(commits) commits")
        }
    }

    /// A publish reaching an idle connection is queued for commit on the event loop; one refused
    /// there (unknown stream, bad event, over the window) is still answered only after the
    /// publishes before it, and what follows it still waits its turn. Here the writer is held so
    /// every reply must wait for the release.
    @Test func publishesDecidedOnTheEventLoopAreAnsweredInOrder() async throws {
        try await TestBroker.with({ $0.maxPipelinedPublishes = 2 }) { broker in
            let store = try #require(broker.broker.store as? SQLiteStore)
            let writer = try await HeldWriter(store)
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                let event = emergency("fire", severity: 1).serialized
                let good = { (id: String) in #"{"type":"publish","id":"\#(id)","stream":"emergencies","event":\#(event)}"# }
                try await connection.send(text: good("a"))
                try await waitUntil("a is queued for commit") { broker.broker.publishBudget.used > 0 }
                try await connection.send(text: #"{"type":"publish","id":"b","stream":"nowhere","event":\#(event)}"#)
                try await connection.send(text: good("c"))
                try await connection.send(text: good("d"))
                try await connection.send(text: good("e"))  // over the window of 2: waits for room
                try await connection.send(text: #"{"type":"publish","id":"f","stream":"emergencies","event":{"kind":"fire"}}"#)
                try await connection.send(text: #"{"type":"ping","id":"g"}"#)
                #expect(await inbox.isQuiet(for: .milliseconds(200)), "nothing is answered while the writer is held")
                writer.release()
                var replies: [String] = []
                for _ in 0..<7 {
                    switch try await inbox.next() {
                    case .published(let id, _, _, _, _): replies.append("published \(id ?? "-")")
                    case .error(let id, let code, _, _): replies.append("\(code) \(id ?? "-")")
                    case .pong(let id): replies.append("pong \(id ?? "-")")
                    case let other: replies.append(other.encoded)
                    }
                }
                #expect(
                    replies == [
                        "published a", "unknown_stream b", "published c", "published d", "published e", "schema_violation f", "pong g",
                    ])
            }
            try await writer.released()
        }
    }

    /// Two connections pipelining while the writer is held: the broker as a whole holds no more
    /// than its budget of their messages; the rest wait unread, and all are answered after.
    @Test func theBrokerWideBudgetBoundsPublishesAcrossConnections() async throws {
        let event = emergency("fire", severity: 1).serialized
        let frame: @Sendable (Int) -> String = { i in #"{"type":"publish","id":"p\#(i)","stream":"emergencies","event":\#(event)}"# }
        let size = frame(10).utf8.count
        try await TestBroker.with({ $0.maxPipelinedPublishBytesTotal = 3 * size }) { broker in
            let store = try #require(broker.broker.store as? SQLiteStore)
            let budget = broker.broker.publishBudget
            let writer = try await HeldWriter(store)
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { a in
                try await Connection.run(url: broker.webSocketURL, logger: testLogger) { b in
                    let inboxes = [Inbox(a), Inbox(b)]
                    for i in 10..<20 {
                        try await a.send(text: frame(i))
                        try await b.send(text: frame(i))
                    }
                    try await waitUntil("both readers wait for the budget") { budget.waiting == 2 }
                    #expect(budget.used <= 3 * size)
                    writer.release()
                    for inbox in inboxes {
                        for i in 10..<20 {
                            guard case .published(let id, _, _, _, false) = try await inbox.next() else { throw TestFailure("expected published") }
                            #expect(id == "p\(i)")
                        }
                    }
                    #expect(budget.used == 0 && budget.waiting == 0)
                }
            }
            try await writer.released()
        }
    }

    @Test func theWindowHoldsAtMostItsCapacityAndDrains() async throws {
        let window = PublishWindow(capacity: 2, byteCapacity: 1000)
        await window.begin(bytes: 10)
        await window.begin(bytes: 10)
        #expect(window.inFlight == 2)
        let third = Task { await window.begin(bytes: 10) }
        try await waitUntil("the third publish waits for room") { window.isWaiting }
        #expect(window.inFlight == 2)
        window.end(bytes: 10)
        await third.value
        #expect(window.inFlight == 2)
        let drain = Task { await window.drained() }
        try await waitUntil("drained waits for both") { window.isWaiting }
        window.end(bytes: 10)
        #expect(window.isWaiting, "one is still in flight")
        window.end(bytes: 10)
        await drain.value
        #expect(window.inFlight == 0 && window.bytesInFlight == 0)
        await window.drained()  // nothing in flight: returns at once
    }

    @Test func theWindowHoldsAtMostItsBytesButLetsOneLargeMessageInAlone() async throws {
        let window = PublishWindow(capacity: 100, byteCapacity: 1000)
        await window.begin(bytes: 600)
        let second = Task { await window.begin(bytes: 600) }
        try await waitUntil("1200 bytes do not fit in 1000") { window.isWaiting }
        window.end(bytes: 600)
        await second.value
        #expect(window.bytesInFlight == 600)
        let huge = Task { await window.begin(bytes: 5000) }
        try await waitUntil("a message over the limit waits for an empty window") { window.isWaiting }
        window.end(bytes: 600)
        await huge.value
        #expect(window.bytesInFlight == 5000 && window.inFlight == 1)
        let small = Task { await window.begin(bytes: 1) }
        try await waitUntil("nothing joins it") { window.isWaiting }
        window.end(bytes: 5000)
        await small.value
        #expect(window.bytesInFlight == 1)
    }

    @Test func theBudgetAdmitsInOrderWhatFitsAndOneLargeMessageAlone() async throws {
        let budget = PublishBudget(capacity: 100)
        await budget.acquire(60)
        final class Order: Sendable { let list = Mutex<[Int]>([]) }
        let order = Order()
        let big = Task {
            await budget.acquire(70)  // does not fit beside the 60
            order.list.withLock { $0.append(70) }
        }
        try await waitUntil("70 waits") { budget.waiting == 1 }
        let small = Task {
            await budget.acquire(10)  // would fit, but comes after the waiting 70: no barging
            order.list.withLock { $0.append(10) }
        }
        try await waitUntil("10 waits behind it") { budget.waiting == 2 }
        budget.release(60)
        await big.value
        await small.value
        #expect(order.list.withLock { $0 } == [70, 10])
        #expect(budget.used == 80)
        budget.release(70)
        budget.release(10)
        await budget.acquire(500)  // larger than the whole budget: goes alone, at once when it is free
        #expect(budget.used == 500)
        let next = Task { await budget.acquire(1) }
        try await waitUntil("nothing joins it") { budget.waiting == 1 }
        budget.release(500)
        await next.value
        #expect(budget.used == 1 && budget.waiting == 0)
    }
}

/// The store's writer held, as a long write elsewhere in the broker would hold it, until
/// `release`: commits wait meanwhile.
final class HeldWriter: Sendable {
    private let gate = DispatchSemaphore(value: 0)
    private let holder: Task<Void, any Error>

    init(_ store: SQLiteStore) async throws {
        let held = Atomic<Bool>(false)
        let gate = self.gate
        holder = Task {
            try await store.pool.writeWithoutTransaction { _ in
                held.store(true, ordering: .relaxed)
                gate.wait()
            }
        }
        try await waitUntil("the writer is held") { held.load(ordering: .relaxed) }
    }

    func release() { gate.signal() }

    /// Returns once the write that held it has ended.
    func released() async throws { try await holder.value }
}
