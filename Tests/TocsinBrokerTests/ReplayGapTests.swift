import Foundation
import Logging
import Synchronization
import Testing
import TocsinCore
import TocsinTesting
@testable import TocsinBroker
@testable import TocsinStore

/// "Never a silent gap": events a subscription had not received yet that are deleted under it
/// (retention, `whenFull: dropOldest`) are announced with `subscribed` and `recovered: false`,
/// whether its replay or the stream's tail finds them gone. Driven on a dispatcher over a real store.
@Suite(.timeLimit(.minutes(1)))
struct ReplayGapTests {
    final class Frames: Sendable {
        let texts = Mutex<[String]>([])
    }

    /// A session that drains in place into `frames`.
    func session(_ frames: Frames) -> Session {
        Session(id: "s", maxOutboundBytes: 1 << 30, logger: Logger(label: "t")) { session in
            while case .frames(let taken) = session.take() {
                let texts = taken.map { frame -> String in
                    switch frame {
                    case .text(let text): text
                    case .notify(let prefix, let suffix): prefix + suffix
                    }
                }
                frames.texts.withLock { $0 += texts }
            }
        }
    }

    func setUp(_ directory: String) async throws -> (SQLiteStore, StreamDispatcher, CompiledChannel) {
        let store = try SQLiteStore(configuration: .init(path: directory + "/db.sqlite", synchronousFull: false))
        let definition = try StreamDefinition(
            name: "s", json: ["fields": [["name": "n", "type": "int"]], "retention": ["maxEvents": 3]])
        let (info, _) = try await store.putStream(definition, recreate: false)
        let channel = try ChannelCompiler.compile(
            ChannelDefinition(name: "All", stream: "s", params: [], whereClause: "n >= 0"), schema: definition.schema)
        let catalog = Catalog()
        catalog.load(streams: [info], channels: [channel.definition])
        let dispatcher = StreamDispatcher(info: info, store: store, catalog: catalog, metrics: BrokerMetrics(), logger: Logger(label: "t"))
        return (store, dispatcher, channel)
    }

    func kinds(_ texts: [String]) -> [String] {
        texts.map { text in
            let message = try? JSONValue.parse(text)
            if message?["type"] == .string("subscribed") {
                return "gap after \(message?["seq"]?.intValue ?? -1), recovered \(message?["recovered"] == .bool(true))"
            }
            return "notify \(message?["seq"]?.intValue ?? -1)"
        }
    }

    @Test func aReplayOvertakenByRetentionSaysSoAndGoesOn() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let (store, dispatcher, channel) = try await setUp(directory)
        // Ten events the dispatcher has seen (so the subscription replays from the store).
        var all: [StoredEvent] = []
        for n in 1...10 { _ = try await store.append(stream: "s", events: [#"{"n":\#(n)}"#]) }
        all = try await store.readEvents(stream: "s", after: 0, limit: 100)
        dispatcher.dispatch(all)
        // The subscription was resolved to start at 0; retention then keeps only 8…10.
        let frames = Frames()
        let subscription = LiveSubscription(id: "sub", session: session(frames), channel: channel, params: [])
        dispatcher.attach(subscription)
        #expect(try await store.enforceRetention(nowMillis: WallClock.nowMillis()) == 7)
        try await dispatcher.replay(subscription, from: 0)
        #expect(kinds(frames.texts.withLock { $0 }) == ["gap after 7, recovered false", "notify 8", "notify 9", "notify 10"])
        // Live from here, with no notice.
        _ = try await store.append(stream: "s", events: [#"{"n":11}"#])
        dispatcher.dispatch(try await store.readEvents(stream: "s", after: 10, limit: 10))
        #expect(kinds(frames.texts.withLock { $0 }).last == "notify 11")
    }

    @Test func aTailThatFindsEventsGoneTellsItsLiveSubscriptions() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let (store, dispatcher, channel) = try await setUp(directory)
        let frames = Frames()
        let subscription = LiveSubscription(id: "sub", session: session(frames), channel: channel, params: [])
        dispatcher.attach(subscription)
        try await dispatcher.replay(subscription, from: 0)  // nothing to replay: live at 0
        // Ten events appended elsewhere (another process), of which retention keeps 8…10
        // before this broker's tail reads them.
        for n in 1...10 { _ = try await store.append(stream: "s", events: [#"{"n":\#(n)}"#]) }
        _ = try await store.enforceRetention(nowMillis: WallClock.nowMillis())
        dispatcher.dispatch(try await store.readEvents(stream: "s", after: 0, limit: 100))
        #expect(kinds(frames.texts.withLock { $0 }) == ["gap after 7, recovered false", "notify 8", "notify 9", "notify 10"])
    }
}
