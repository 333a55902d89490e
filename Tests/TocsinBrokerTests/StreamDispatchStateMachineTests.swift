import PropertyBased
import Testing
import TocsinCore
import TocsinStore

@testable import TocsinBroker

/// `StreamDispatch.StateMachine` driven directly: literal seqs, epochs and times, recipients
/// named by strings (a recipient is one attachment on one connection). No sockets, no threads.
@Suite struct StreamDispatchStateMachineTests {
    typealias Machine = StreamDispatch.StateMachine<String>
    typealias Action = StreamDispatch.Action<String>

    static let schema = try! StreamDefinition(
        name: "s", json: ["fields": [["name": "n", "type": "int"], ["name": "k", "type": "string"]]]
    ).schema

    static func channel(
        _ name: String, _ whereClause: String = "n >= 0", params: [ChannelParameter] = [], mode: ChannelMode = .continuous,
        delivery: DeliveryKind = .push
    ) -> CompiledChannel {
        try! ChannelCompiler.compile(
            ChannelDefinition(name: name, stream: "s", params: params, whereClause: whereClause, mode: mode, delivery: delivery),
            schema: schema)
    }

    static let all = channel("All")
    static let byKey = channel("ByKey", "k == $k", params: [ChannelParameter(name: "k", type: .string)])
    static let counts = channel("Counts", delivery: .notify)
    static let batches = channel("Batches", mode: .repetitive(periodMillis: 1000))
    static let batchCounts = channel("BatchCounts", mode: .repetitive(periodMillis: 1000), delivery: .notify)

    static func event(_ seq: Int64, n: Int = 1, k: String = "a") -> StoredEvent {
        StoredEvent(seq: seq, publishedAtMillis: 0, json: #"{"n":\#(n),"k":"\#(k)"}"#)
    }

    static func events(_ seqs: ClosedRange<Int64>, k: String = "a") -> [StoredEvent] { seqs.map { event($0, k: k) } }

    static func machine(position: Int64 = 10, epoch: String = "e1") -> Machine {
        Machine(stream: "s", epoch: epoch, position: position, schema: schema)
    }

    /// One action, readable: `c1 s1 #12` (a notify), `c1 s1 #12 events 11,12`, `c1 s1 #12 count 2`,
    /// `c1 s1 gone up to e1:7`, `c1 s1 unsubscribed`, `unreadable 12`.
    static func describe(_ action: Action) -> String {
        switch action {
        case .send(let to, .notify(let prefix, let suffix)):
            guard let frame = try? JSONValue.parse(prefix + suffix), let sub = frame["subscription"]?.stringValue,
                let seq = frame["seq"]?.intValue
            else { return "\(to) bad frame" }
            if case .array(let events)? = frame["events"] {
                return "\(to) \(sub) #\(seq) events " + events.map { "\($0["seq"]?.intValue ?? -1)" }.joined(separator: ",")
            }
            if let count = frame["count"]?.intValue { return "\(to) \(sub) #\(seq) count \(count)" }
            return "\(to) \(sub) #\(seq)"
        case .send(let to, .text(let text)): return "\(to) text \(text)"
        case .notRecovered(let to, let info):
            return "\(to) \(info.subscription) gone up to \(info.position.epoch):\(info.position.seq)"
        case .unsubscribed(let to, let id): return "\(to) \(id) unsubscribed"
        case .reportUnreadable(let seqs): return "unreadable " + seqs.map(String.init).joined(separator: ",")
        case .traceDelivery(let to, let seq, let trace, let replayed): return "\(to) traced #\(seq) \(trace)\(replayed ? " replayed" : "")"
        }
    }

    static func dispatch(_ m: inout Machine, _ events: [StoredEvent], now: Int64 = 0) -> [String] {
        var actions: [Action] = []
        _ = m.dispatch(events, nowMillis: now, into: &actions)
        return actions.map(describe)
    }

    static func flush(_ m: inout Machine, now: Int64) -> [String] {
        var actions: [Action] = []
        _ = m.flushRepetitive(nowMillis: now, into: &actions)
        return actions.map(describe)
    }

    static func replay(_ m: inout Machine, _ id: String, _ to: String, _ events: [StoredEvent]) -> [String]? {
        var actions: [Action] = []
        guard m.deliverReplayed(id, recipient: to, events: events, into: &actions) else { return nil }
        return actions.map(describe)
    }

    /// Attaches and makes live at the position (a subscription from `latest`).
    static func live(_ m: inout Machine, _ id: String, _ to: String, _ channel: CompiledChannel = all, params: [Value] = []) {
        #expect(m.attach(id, recipient: to, channel: channel, params: params) == nil)
        #expect(m.goLiveIfCaughtUp(id, recipient: to, replayedTo: m.position) == .live)
    }

    // MARK: Live dispatch

    @Test func liveDispatchIsInSeqOrderAndSkipsWhatIsAtOrBeforeThePosition() {
        var m = Self.machine(position: 10)
        Self.live(&m, "s1", "c1")
        Self.live(&m, "s2", "c2", Self.byKey, params: [.string("b")])
        #expect(Self.dispatch(&m, Self.events(8...12)) == ["c1 s1 #11", "c1 s1 #12"])
        #expect(m.position == 12)
        let out = Self.dispatch(&m, [Self.event(12), Self.event(13, k: "b"), Self.event(14)])
        #expect(out.filter { $0.hasPrefix("c1") } == ["c1 s1 #13", "c1 s1 #14"])
        #expect(out.filter { $0.hasPrefix("c2") } == ["c2 s2 #13"])
        #expect(Self.dispatch(&m, Self.events(1...14)) == [])
    }

    /// With tracing on, each notification of an event stored with a trace is followed by one
    /// `traceDelivery` for its recipient, live (push and notify) or replayed; untraced events,
    /// repetitive batches and a machine without tracing add none.
    @Test func tracedEventsGetADeliverySpanPerNotificationOnlyWhenTracing() {
        func traced(_ seq: Int64, k: String = "a") -> StoredEvent {
            var e = Self.event(seq, k: k)
            e.trace = "t\(seq)"
            return e
        }
        for tracing in [false, true] {
            var m = Self.machine(position: 10)
            m.liveDeliverySpans = tracing ? 10 : 0
            Self.live(&m, "s1", "c1")
            Self.live(&m, "s2", "c2", Self.counts)
            Self.live(&m, "s3", "c3", Self.byKey, params: [.string("b")])
            Self.live(&m, "s4", "c4", Self.batches)
            let out = Self.dispatch(&m, [traced(11), Self.event(12), traced(13, k: "b")])
            let spans = out.filter { $0.contains("traced") }
            // (Channels are visited in no set order.)
            #expect(spans.sorted() == (tracing ? ["c1 traced #11 t11", "c1 traced #13 t13", "c2 traced #11 t11", "c2 traced #13 t13", "c3 traced #13 t13"] : []))
            for span in spans {
                // Right after its notification.
                let i = out.firstIndex(of: span)!
                #expect(out[i - 1].hasPrefix(span.prefix(2)))
            }
            #expect(m.attach("s5", recipient: "c5", channel: Self.all, params: []) == nil)
            let replayed = Self.replay(&m, "s5", "c5", [traced(5), Self.event(6)])
            #expect(replayed == ["c5 s5 #5"] + (tracing ? ["c5 traced #5 t5 replayed"] : []) + ["c5 s5 #6"])
        }
        // At most `liveDeliverySpans` spans per event, however many notifications it makes.
        var m = Self.machine(position: 10)
        m.liveDeliverySpans = 2
        for i in 1...5 { Self.live(&m, "s\(i)", "c\(i)") }
        let out = Self.dispatch(&m, [traced(11), traced(12)])
        #expect(out.filter { $0.hasSuffix("t11") }.count == 2 && out.filter { $0.hasSuffix("t12") }.count == 2, "\(out)")
        #expect(out.filter { $0.contains(" s") }.count == 10, "every notification is still sent")
    }

    @Test func notifyDeliverySendsACountOfOnePerEvent() {
        var m = Self.machine(position: 0)
        Self.live(&m, "s1", "c1", Self.counts)
        #expect(Self.dispatch(&m, Self.events(1...2)) == ["c1 s1 #1 count 1", "c1 s1 #2 count 1"])
    }

    @Test func committedEventsAreTakenOnlyWhenTheyFollowOn() {
        let m = Self.machine(position: 10, epoch: "e1")
        #expect(m.follows(epoch: "e1", first: 11))
        #expect(!m.follows(epoch: "e1", first: 12), "after a hole: the tail reads it")
        #expect(!m.follows(epoch: "e1", first: 10))
        #expect(!m.follows(epoch: "e2", first: 11), "another epoch: the tail resets first")
        #expect(m.follows(epoch: "e1", first: nil), "a later chunk of a commit that was taken")
    }

    @Test func eventsAfterAHoleTellLiveSubscriptionsWhatIsGone() {
        var m = Self.machine(position: 5)
        Self.live(&m, "s1", "c1")
        // Attached but still replaying: its replay finds the hole itself.
        #expect(m.attach("s2", recipient: "c2", channel: Self.all, params: []) == nil)
        #expect(m.goLiveIfCaughtUp("s2", recipient: "c2", replayedTo: 2) == .replay(to: 5))
        #expect(Self.dispatch(&m, [Self.event(8), Self.event(9)]) == ["c1 s1 gone up to e1:7", "c1 s1 #8", "c1 s1 #9"])
        var actions: [Action] = []
        #expect(m.replayGap("s2", recipient: "c2", at: 4, into: &actions))
        #expect(actions.map(Self.describe) == ["c2 s2 gone up to e1:4"])
    }

    @Test func unreadableEventsAreReportedAndTheRestDelivered() {
        var m = Self.machine(position: 10)
        // Nothing attached: nothing is read, so nothing is reported.
        #expect(Self.dispatch(&m, [StoredEvent(seq: 11, publishedAtMillis: 0, json: #"{"n":"x"}"#)]) == [])
        Self.live(&m, "s1", "c1")
        let bad = StoredEvent(seq: 13, publishedAtMillis: 0, json: #"{"n":"x"}"#)
        #expect(Self.dispatch(&m, [Self.event(12), bad, Self.event(14)]) == ["c1 s1 #12", "c1 s1 #14", "unreadable 13"])
        #expect(m.position == 14)
    }

    // MARK: Replay

    @Test func aTailCommitDuringReplayMovesTheTargetAndTheSubscriptionGoesLiveOnce() {
        var m = Self.machine(position: 10)
        #expect(m.attach("s1", recipient: "c1", channel: Self.all, params: []) == nil)
        var delivered: [String] = []
        #expect(m.goLiveIfCaughtUp("s1", recipient: "c1", replayedTo: 4) == .replay(to: 10))
        delivered += Self.replay(&m, "s1", "c1", Self.events(5...10)) ?? ["detached"]
        // The tail commits 11 and 12 while the replay reads: not live yet, so nothing for s1.
        #expect(Self.dispatch(&m, Self.events(11...12)) == [])
        #expect(m.goLiveIfCaughtUp("s1", recipient: "c1", replayedTo: 10) == .replay(to: 12))
        delivered += Self.replay(&m, "s1", "c1", Self.events(11...12)) ?? ["detached"]
        #expect(m.goLiveIfCaughtUp("s1", recipient: "c1", replayedTo: 12) == .live)
        delivered += Self.dispatch(&m, Self.events(12...13))
        #expect(delivered == (5...13).map { "c1 s1 #\($0)" })
    }

    @Test func aSubscriptionStartingBeyondTheTailWaitsUntilTheTailGetsThere() {
        var m = Self.machine(position: 10)
        #expect(m.attach("s1", recipient: "c1", channel: Self.all, params: []) == nil)
        #expect(m.goLiveIfCaughtUp("s1", recipient: "c1", replayedTo: 15) == .waitingForTail)
        #expect(Self.dispatch(&m, Self.events(11...14)) == [])
        #expect(Self.dispatch(&m, Self.events(15...15)) == [])
        #expect(Self.dispatch(&m, Self.events(16...17)) == ["c1 s1 #16", "c1 s1 #17"])
    }

    // MARK: Epochs

    @Test func aResetAnnouncesSubscriptionsAtSeqZeroAndDropsThoseWhoseChannelNoLongerCompiles() {
        var m = Self.machine(position: 10, epoch: "e1")
        Self.live(&m, "s1", "c1")
        Self.live(&m, "s2", "c2", Self.byKey, params: [.string("a")])
        // s3 is still replaying, s4 waits for the tail: a reset makes both live at seq 0.
        #expect(m.attach("s3", recipient: "c3", channel: Self.all, params: []) == nil)
        #expect(m.attach("s4", recipient: "c4", channel: Self.all, params: []) == nil)
        #expect(m.goLiveIfCaughtUp("s4", recipient: "c4", replayedTo: 20) == .waitingForTail)
        var actions: [Action] = []
        m.reset(epoch: "e2", schema: Self.schema, recompile: { name, _ in name == "All" ? Self.all : nil }, into: &actions)
        #expect(
            Set(actions.map(Self.describe))
                == ["c1 s1 gone up to e2:0", "c2 s2 unsubscribed", "c3 s3 gone up to e2:0", "c4 s4 gone up to e2:0"])
        #expect(m.epoch == "e2" && m.position == 0)
        #expect(m.recipient(of: "s2") == nil)
        // The old epoch's replay is over: the renewed attachment is live from seq 0.
        #expect(m.goLiveIfCaughtUp("s3", recipient: "c3", replayedTo: 4) == .detached)
        #expect(Self.replay(&m, "s3", "c3", Self.events(5...6)) == nil)
        #expect(Set(Self.dispatch(&m, Self.events(1...1))) == ["c1 s1 #1", "c3 s3 #1", "c4 s4 #1"])
    }

    @Test func aSchemaUpdateForAnotherEpochIsIgnored() {
        var m = Self.machine(epoch: "e1")
        let wider = try! StreamDefinition(name: "s", json: ["fields": [["name": "n", "type": "int"]]]).schema
        m.updateSchema(epoch: "e0", schema: wider)
        #expect(m.schema == Self.schema)
        m.updateSchema(epoch: "e1", schema: wider)
        #expect(m.schema == wider)
    }

    // MARK: Repetitive batches

    @Test func aRepetitiveBatchIsSentWhenItsPeriodIsDue() {
        var m = Self.machine(position: 10)
        Self.live(&m, "s1", "c1", Self.batches)
        Self.live(&m, "s2", "c2", Self.batchCounts)
        // The first visit sets the end of the period.
        #expect(Self.flush(&m, now: 5_000) == [])
        #expect(Self.dispatch(&m, Self.events(11...12)) == [])
        #expect(Self.flush(&m, now: 5_999) == [])
        #expect(Set(Self.flush(&m, now: 6_000)) == ["c1 s1 #12 events 11,12", "c2 s2 #12 count 2"])
        #expect(Self.flush(&m, now: 7_000) == [], "nothing collected, nothing sent")
        #expect(Self.dispatch(&m, Self.events(13...13)) == [])
        #expect(Self.flush(&m, now: 7_999) == [])
        #expect(Set(Self.flush(&m, now: 8_000)) == ["c1 s1 #13 events 13", "c2 s2 #13 count 1"])
    }

    @Test func aFullRepetitiveBatchIsSentAtOnce() {
        var m = Self.machine(position: 0)
        Self.live(&m, "s1", "c1", Self.batches)
        let n = Int64(StreamDispatch.maxBatchEvents)
        #expect(Self.dispatch(&m, Self.events(1...(n - 1))) == [])
        let sent = Self.dispatch(&m, Self.events(n...(n + 1)))
        #expect(sent.count == 1 && sent[0].hasPrefix("c1 s1 #\(n) events 1,2,"))
        // By bytes: two events of more than half the limit.
        var big = Self.machine(position: 0)
        Self.live(&big, "s1", "c1", Self.batches)
        let k = String(repeating: "x", count: StreamDispatch.maxBatchBytes / 2 + 1)
        #expect(Self.dispatch(&big, [Self.event(1, k: k)]) == [])
        #expect(Self.dispatch(&big, [Self.event(2, k: k)]) == ["c1 s1 #2 events 1,2"])
    }

    @Test func aClockAtTheEndOfTimeDoesNotOverflowTheNextFlush() {
        var m = Self.machine(position: 0)
        Self.live(&m, "s1", "c1", Self.batches)
        #expect(Self.flush(&m, now: .max - 10) == [])
        #expect(Self.dispatch(&m, Self.events(1...1)) == [])
        #expect(Self.flush(&m, now: .max - 1) == [])
        #expect(Self.flush(&m, now: .max) == ["c1 s1 #1 events 1"])
    }

    // MARK: Detach and takeover

    @Test func nothingIsDecidedForADetachedOrTakenOverSubscription() {
        var m = Self.machine(position: 10)
        Self.live(&m, "s1", "c1")
        Self.live(&m, "b1", "c1", Self.batches)
        #expect(Self.dispatch(&m, Self.events(11...11)) == ["c1 s1 #11"])
        // Another connection takes s1 over; its replay has not started.
        #expect(m.attach("s1", recipient: "c2", channel: Self.all, params: []) == "c1")
        #expect(Self.dispatch(&m, Self.events(12...12)) == [])
        // The old attachment's replay is over, whatever it tries.
        #expect(m.goLiveIfCaughtUp("s1", recipient: "c1", replayedTo: 5) == .detached)
        #expect(Self.replay(&m, "s1", "c1", Self.events(6...7)) == nil)
        var actions: [Action] = []
        #expect(!m.replayGap("s1", recipient: "c1", at: 5, into: &actions) && actions.isEmpty)
        #expect(m.goLiveIfCaughtUp("s1", recipient: "c2", replayedTo: 12) == .live)
        #expect(Self.dispatch(&m, Self.events(13...13)) == ["c2 s1 #13"])
        // Detached: its collected batch is dropped with it, and nothing more comes.
        #expect(m.detach("s1") == "c2")
        #expect(m.detach("b1") == "c1")
        #expect(m.detach("b1") == nil)
        #expect(Self.dispatch(&m, Self.events(14...14)) == [])
        #expect(Self.flush(&m, now: 1_000_000) == [])
        #expect(m.channels.isEmpty && m.attached.isEmpty && m.repetitive.isEmpty)
    }

    @Test func detachingAChannelsSubscriptionsLeavesTheOthers() {
        var m = Self.machine(position: 10)
        Self.live(&m, "s1", "c1")
        Self.live(&m, "s2", "c2", Self.byKey, params: [.string("a")])
        Self.live(&m, "s3", "c3", Self.byKey, params: [.string("a")])
        #expect(Set(m.attached(channel: "ByKey")) == ["s2", "s3"])
        #expect(m.detach("s2") == "c2")
        #expect(Set(Self.dispatch(&m, Self.events(11...11))) == ["c1 s1 #11", "c3 s3 #11"])
    }

    // MARK: Against brute force

    /// Random interleavings of commits (the store moving ahead), tail steps, attaches (new
    /// subscriptions and takeovers), replay steps and detaches, against what each attachment
    /// must get: in order, without duplicates or holes, the events after its start that match
    /// its key, a prefix of them if it was detached or taken over (and nothing afterwards), all
    /// of them if it is still attached once replays and the tail have caught up.
    @Test func randomInterleavingsDeliverWhatBruteForceExpects() async {
        await propertyCheck(count: 200, input: Gen.int(in: 0...999).array(of: 1...120)) { ops in
            let keys = ["a", "b"]
            var m = Self.machine(position: 0)
            var log: [StoredEvent] = []  // the store
            struct Attachment {
                var id: String
                var key: String
                var start: Int64
                var replayedTo: Int64?  // nil once live, waiting or over
                var delivered: [Int64] = []
                var over = false
            }
            var attachments: [String: Attachment] = [:]  // recipient -> attachment
            var next = 0
            let apply: (inout [String: Attachment], [Action]) -> Void = { attachments, actions in
                for action in actions {
                    guard case .send(let to, .notify(let prefix, let suffix)) = action,
                        let seq = (try? JSONValue.parse(prefix + suffix))?["seq"]?.intValue
                    else {
                        Issue.record("unexpected \(Self.describe(action))")
                        continue
                    }
                    #expect(attachments[to]?.over == false, "\(to) got #\(seq) after it was detached")
                    attachments[to]?.delivered.append(seq)
                }
            }
            func replayStep(_ to: String, _ attachments: inout [String: Attachment], chunk: Int64) {
                guard let a = attachments[to], let from = a.replayedTo else { return }
                switch m.goLiveIfCaughtUp(a.id, recipient: to, replayedTo: from) {
                case .replay(let target):
                    let upTo = min(target, from + chunk)
                    let matching = log.filter { $0.seq > from && $0.seq <= upTo && $0.json.contains(#""k":"\#(a.key)""#) }
                    var actions: [Action] = []
                    #expect(m.deliverReplayed(a.id, recipient: to, events: matching, into: &actions))
                    apply(&attachments, actions)
                    attachments[to]?.replayedTo = upTo
                case .live, .waitingForTail, .detached:
                    attachments[to]?.replayedTo = nil
                }
            }
            for op in ops {
                let live = attachments.filter { !$0.value.over }.keys.sorted()
                switch op % 10 {
                case 0...2:  // the store commits
                    log.append(Self.event(Int64(log.count + 1), k: keys[op % 2]))
                case 3...4:  // the tail (or the commit thread) dispatches some, possibly again
                    let from = max(0, Int(m.position) - op % 3)
                    let to = min(log.count, from + op % 5 + 1)
                    var actions: [Action] = []
                    _ = m.dispatch(log[from..<to], nowMillis: 0, into: &actions)
                    apply(&attachments, actions)
                case 5:  // attach (a takeover when the id is attached already)
                    next += 1
                    let to = "c\(next)", id = "s\(op % 3)", key = keys[op / 10 % 2]
                    let start = Int64(op / 20 % (log.count + 1))
                    if let replaced = m.attach(id, recipient: to, channel: Self.byKey, params: [.string(key)]) {
                        #expect(attachments[replaced]?.id == id && attachments[replaced]?.over == false)
                        attachments[replaced]?.over = true
                    }
                    attachments[to] = Attachment(id: id, key: key, start: start, replayedTo: start)
                case 6...8:  // a replay reads a chunk
                    guard !live.isEmpty else { continue }
                    replayStep(live[op / 10 % live.count], &attachments, chunk: Int64(op % 4 + 1))
                default:  // detach
                    guard !live.isEmpty else { continue }
                    let to = live[op / 10 % live.count]
                    #expect(m.detach(attachments[to]!.id) == to)
                    attachments[to]?.over = true
                }
            }
            // Catch up: the tail dispatches everything, replays finish.
            var actions: [Action] = []
            _ = m.dispatch(log, nowMillis: 0, into: &actions)
            apply(&attachments, actions)
            for to in attachments.keys.sorted() {
                while attachments[to]?.replayedTo != nil { replayStep(to, &attachments, chunk: 1000) }
            }
            for (to, a) in attachments {
                let expected = log.filter { $0.seq > a.start && $0.json.contains(#""k":"\#(a.key)""#) }.map(\.seq)
                if a.over {
                    #expect(Array(expected.prefix(a.delivered.count)) == a.delivered, "\(to): not a prefix of \(expected)")
                } else {
                    #expect(a.delivered == expected, "\(to)")
                }
            }
        }
    }
}
