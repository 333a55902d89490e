import Foundation
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinHTTPClient
import TocsinStore
import TocsinTesting

/// Subscriptions that look back (`"history": "24h"`, `"from": {"since": time}`): the stored
/// events of the window that match, through the same matcher and enrichment, then live, with no
/// gap and no duplicate at the seam — also while events are being published during the replay.
@Suite(.timeLimit(.minutes(1)))
struct HistoryTests {
    /// The store's clock: one millisecond per tick the test takes, so each event's publish time is known.
    final class Clock: Sendable {
        let now = Atomic<Int64>(1_800_000_000_000)
        var read: @Sendable () -> Int64 { { [self] in self.now.load(ordering: .relaxed) } }
    }

    static func event(_ n: Int) -> JSONValue { ["n": .int(Int64(n)), "even": .bool(n % 2 == 0)] }

    static func define(_ broker: TestBroker) async throws {
        _ = try await HTTPCall.call(.PUT, broker.httpURL + "/v1/streams/r", body: ["fields": [["name": "n", "type": "int"], ["name": "even", "type": "bool"]]])
        _ = try await HTTPCall.call(
            .PUT, broker.httpURL + "/v1/channels/Even", body: ["stream": "r", "where": "even"])
    }

    @Test func aWindowReplaysItsMatchesThenGoesLiveWithoutAGapOrADuplicate() async throws {
        let clock = Clock()
        try await TestBroker.with(
            store: { directory in
                var configuration = SQLiteStore.Configuration(path: directory + "/tocsin.sqlite", synchronousFull: false)
                configuration.nowMillis = clock.read
                return .sqlite(configuration)
            }
        ) { broker in
            try await Self.define(broker)
            // Event n is published at t0 + 60 s × n: 24 events over a day.
            let t0 = clock.now.load(ordering: .relaxed)
            for n in 1...24 {
                clock.now.store(t0 + Int64(n) * 60_000, ordering: .relaxed)
                _ = try await HTTPCall.call(.POST, broker.httpURL + "/v1/streams/r/events", body: Self.event(n))
            }
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                _ = try await connection.hello(client: "looker")
                // Since the 10th event's time: events 10...24, of which the even ones.
                let since = try await connection.subscribe(channel: "Even", params: [:], from: .since(millis: t0 + 10 * 60_000))
                #expect(since.recovered)
                let replayed = try await inbox.notifications(8).map(\.seq)
                #expect(replayed == [10, 12, 14, 16, 18, 20, 22, 24])
                #expect(await inbox.isQuiet(for: .milliseconds(50)))
            }
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                _ = try await connection.hello(client: "another")
                // The broker's clock (the wall clock) ends the window; the store's stamped the
                // events in 2027, so the last hour holds all of them: the 12 even ones, then live.
                _ = try await connection.subscribe(channel: "Even", params: [:], from: .history(millis: 3_600_000))
                #expect(try await inbox.notifications(12).map(\.seq) == Array(stride(from: 2, through: 24, by: 2)))
                _ = try await connection.publish(stream: "r", events: [Self.event(26)])
                #expect(try await inbox.notifications(1).map(\.seq) == [25])

            }
        }
    }

    /// Publishing all the while: the replay of the window and live delivery meet exactly once.
    @Test func theSeamHoldsWhilePublishing() async throws {
        try await TestBroker.with { broker in
            try await Self.define(broker)
            for n in 1...300 { _ = try await HTTPCall.call(.POST, broker.httpURL + "/v1/streams/r/events", body: Self.event(n)) }
            let stop = Atomic<Bool>(false)
            let publisher = Task {
                var n = 300
                while !stop.load(ordering: .relaxed) {
                    n += 1
                    _ = try await HTTPCall.call(.POST, broker.httpURL + "/v1/streams/r/events", body: Self.event(n))
                }
                return n
            }
            try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
                let inbox = Inbox(connection)
                _ = try await connection.hello(client: "looker")
                _ = try await connection.subscribe(channel: "Even", params: [:], from: .history(millis: 3_600_000))
                var seqs = try await inbox.notifications(200).map(\.seq)
                stop.store(true, ordering: .relaxed)
                let last = try await publisher.value
                seqs += try await inbox.notifications(last / 2 - 200).map(\.seq)
                #expect(seqs == Array(stride(from: 2, through: Int64(last / 2 * 2), by: 2)), "every even event once, in order")
                #expect(await inbox.isQuiet(for: .milliseconds(50)))
            }
        }
    }

    @Test(arguments: [
        (#"{"type":"subscribe","channel":"Even","history":"0s"}"#, "more than 0"),
        (#"{"type":"subscribe","channel":"Even","history":"36501d"}"#, "at most 36500d"),
        (#"{"type":"subscribe","channel":"Even","history":24}"#, "a duration"),
        (#"{"type":"subscribe","channel":"Even","history":"1h","from":"earliest"}"#, "not both"),
        (#"{"type":"subscribe","channel":"Even","from":{"since":"yesterday"}}"#, "RFC 3339"),
        (#"{"type":"subscribe","channel":"Even","from":{"since":9223372036854775807}}"#, "years 1 to 9999"),
    ])
    func badWindowsAreRefused(frame: String, fragment: String) {
        guard case .failure(let error) = ClientMessage.decode(Array(frame.utf8)) else {
            Issue.record("\(frame) was accepted")
            return
        }
        #expect(error.error.code == .badRequest && error.error.message.contains(fragment), "\(frame): \(error.error.message)")
    }
}
