import TocsinCore
import TocsinStore

/// The dispatch of one stream's events to the subscriptions attached on this broker, as a
/// value: which subscription gets which notification, in which order, from which seq.
///
/// `StateMachine` holds plain values: the stream's epoch, position (the last seq dispatched) and
/// schema, a `ChannelIndex` and the subscribers per interest for each channel with live
/// subscriptions, the attached subscriptions (with their repetitive batches) and those waiting
/// for the tail. It is generic over an opaque `Recipient` it never calls into: the broker passes
/// the `LiveSubscription` (an identity: a newer attachment of the same id is another
/// recipient), tests pass strings. Its methods take the events and the time as arguments and
/// append what to do to an `Action` buffer; no locks, no I/O, no logging, no clock inside.
/// `StreamDispatcher` owns one and applies the actions outside its lock.
enum StreamDispatch {
    /// A repetitive channel's batch (push delivery) that reaches this many events, or
    /// `maxBatchBytes` of event JSON, is sent at once instead of at the end of the period:
    /// memory per subscription stays bounded, and nothing is lost.
    static let maxBatchEvents = 1000
    static let maxBatchBytes = 1 << 20

    /// What the owner does after a step, in the order the machine decided it.
    enum Action<Recipient: Hashable & Sendable>: Equatable, Sendable {
        /// Queue a frame on the recipient's connection.
        case send(Recipient, OutFrame)
        /// Tell the subscription that events it had not received are gone: `subscribed` without
        /// an id and `recovered: false`; delivery goes on after `info.position`.
        case notRecovered(Recipient, SubscriptionInfo)
        /// The subscription was detached because its channel no longer compiles (the stream was
        /// recreated): forget it on the connection and send `unsubscribed` without an id.
        case unsubscribed(Recipient, subscription: String)
        /// Stored events that did not read back against the schema: count and log them.
        case reportUnreadable([Int64])
        /// A notification of a traced event was just queued (the `send` before this): record a
        /// delivery span in the publish's trace. Only when `liveDeliverySpans` is above 0.
        case traceDelivery(Recipient, seq: Int64, trace: String, replayed: Bool)
    }

    /// Where a replaying subscription stands (`StateMachine.goLiveIfCaughtUp`).
    enum ReplayStep: Equatable, Sendable {
        /// Behind the position: replay up to this seq, then ask again.
        case replay(to: Int64)
        /// Caught up and joined live dispatch.
        case live
        /// Starts beyond the position (the tail lags the store): goes live when the tail gets there.
        case waitingForTail
        /// No longer attached (or attached anew, or renewed by a reset): the replay stops.
        case detached
    }

    static func record(_ event: StoredEvent, schema: StreamSchema) -> Record? {
        try? schema.record(from: JSONValue.parse(event.json))
    }

    /// The `subscribed` a subscription gets when events it had not received are gone.
    static func notRecovered(
        subscription: String, channel: ChannelDefinition, params: [Value], stream: String, position: StreamPosition
    ) -> SubscriptionInfo {
        var bound: [String: JSONValue] = [:]
        for (parameter, value) in zip(channel.params, params) { bound[parameter.name] = value.json }
        return SubscriptionInfo(
            subscription: subscription, channel: channel.name, params: bound, stream: stream, position: position, recovered: false)
    }
}

extension StreamDispatch {
    /// See `StreamDispatch`. Split by concern: attaching and replay here, live dispatch in
    /// `StreamDispatch+Live.swift`, repetitive batches and resets in `StreamDispatch+Batches.swift`.
    struct StateMachine<Recipient: Hashable & Sendable>: Sendable {
        typealias Action = StreamDispatch.Action<Recipient>

        /// How a subscriber's matches are delivered.
        enum Kind: Sendable {
            /// Continuous push: the event, straight from the subscriber list.
            case push
            /// Continuous notify: a count of 1 per event.
            case notify
            /// Collected per period (`flushRepetitive`), or sent at once when the batch is full.
            case repetitive(periodMillis: Int64, push: Bool)

            init(_ definition: ChannelDefinition) {
                switch (definition.mode, definition.delivery) {
                case (.continuous, .push): self = .push
                case (.continuous, .notify): self = .notify
                case (.repetitive(let period), let delivery): self = .repetitive(periodMillis: period, push: delivery == .push)
                }
            }
        }

        /// What live dispatch needs of a subscriber, copied into the channel's subscriber lists.
        struct Subscriber: Sendable {
            let id: String
            let recipient: Recipient
            /// The `{"type":"notify","subscription":"…"` part of its notify frames.
            let prefix: String
            let kind: Kind
        }

        struct ChannelState: Sendable {
            let channel: CompiledChannel
            var index: ChannelIndex
            /// Live subscribers per interest.
            var subscribers: [InterestID: [Subscriber]] = [:]
        }

        struct Attached: Sendable {
            var subscriber: Subscriber
            var channel: CompiledChannel
            var params: [Value]
            /// Set once live.
            var interest: InterestID?
            /// Made live again by a reset: no replay belongs to it any more.
            var renewed = false
            /// Repetitive channels: matches collected since the last flush (push delivery), at most
            /// `maxBatchEvents` and about `maxBatchBytes` of event JSON. Mutated in place (never
            /// through a copy of the `Attached`), so an append is O(1).
            var pending: [EventPayload] = []
            var pendingBytes = 0
            var pendingCount = 0
            var pendingSeq: Int64 = 0
            var nextFlushMillis: Int64 = 0
        }

        let stream: String
        private(set) var epoch: String
        /// The last seq dispatched.
        var position: Int64
        private(set) var schema: StreamSchema
        var channels: [String: ChannelState] = [:]
        var attached: [String: Attached] = [:]
        /// Ids of attached subscriptions on repetitive channels (the ticker visits only these).
        var repetitive: Set<String> = []
        /// Subscriptions that start beyond the tail (it lags the store): they go live once the
        /// tail reaches their seq.
        var waitingForTail: [String: Int64] = [:]
        /// Scratch for matching, kept to avoid an allocation per event.
        var matched: [InterestID] = []
        /// The `enriched` object of a matching event for a channel with `enrich` clauses
        /// (`Enricher.json`: channel, record, bound params, now); nil: nothing is enriched.
        /// It reads the broker's dataset tables, nothing else.
        var enrich: (@Sendable (CompiledChannel, Record, [Value], Int64) -> String?)?
        /// The broker records spans: the first this many live notifications of each event stored
        /// with a trace (and every replayed one) are followed by a `traceDelivery` action. 0: off,
        /// and no event's trace is even looked at. A span costs tens of µs: a cap keeps a traced
        /// event to a million subscribers from costing seconds.
        var liveDeliverySpans = 0

        init(stream: String, epoch: String, position: Int64, schema: StreamSchema) {
            self.stream = stream
            self.epoch = epoch
            self.position = position
            self.schema = schema
        }

        // MARK: Attaching

        /// Registers a subscription; it receives nothing until a replay makes it live
        /// (`goLiveIfCaughtUp`). An earlier attachment of the same id is replaced and its
        /// recipient returned: nothing more is decided for it.
        mutating func attach(_ id: String, recipient: Recipient, channel: CompiledChannel, params: [Value]) -> Recipient? {
            let replaced = detach(id)
            let subscriber = Subscriber(id: id, recipient: recipient, prefix: NotifyFrame.prefix(subscription: id), kind: Kind(channel.definition))
            attached[id] = Attached(subscriber: subscriber, channel: channel, params: params)
            if case .repetitive = subscriber.kind { repetitive.insert(id) }
            return replaced
        }

        /// The recipient a subscription is attached to.
        func recipient(of id: String) -> Recipient? { attached[id]?.subscriber.recipient }

        /// Ids of the subscriptions attached through `channel`.
        func attached(channel: String) -> [String] {
            attached.values.filter { $0.channel.name == channel }.map(\.subscriber.id)
        }

        /// Stops deciding anything for a subscription; returns the recipient it had.
        mutating func detach(_ id: String) -> Recipient? {
            guard let a = attached.removeValue(forKey: id) else { return nil }
            waitingForTail.removeValue(forKey: id)
            repetitive.remove(id)
            leaveInterest(a)
            return a.subscriber.recipient
        }

        /// The bound parameters an attached subscription matches with now.
        func params(of id: String) -> [Value]? { attached[id]?.params }

        /// Moves a subscription to new parameters (one bound to a dataset record that changed):
        /// a live one leaves its interest and joins the new one in this step, so every event
        /// dispatched before it matched the old parameters and every event after it matches the
        /// new ones, with no gap and no duplicate. A replaying one matches its next batch with
        /// them. False (nothing done) if `recipient` is not the current attachment.
        mutating func rebind(_ id: String, recipient: Recipient, params: [Value]) -> Bool {
            guard var a = attached[id], a.subscriber.recipient == recipient else { return false }
            guard a.params != params else { return true }
            leaveInterest(a)
            let live = a.interest != nil
            a.interest = nil
            a.params = params
            if live { makeLive(&a) }
            attached[id] = a
            return true
        }

        /// Takes a live subscription out of its interest's subscriber list (and the interest out
        /// of the index when it was the last).
        private mutating func leaveInterest(_ a: Attached) {
            let name = a.channel.name, id = a.subscriber.id
            guard let interest = a.interest, channels[name] != nil else { return }
            // Mutated in place (through the dictionary's accessor): a copy of the channel's state
            // would copy its whole index and subscriber table on write, once per subscription.
            channels[name]!.subscribers[interest]?.removeAll { $0.id == id }
            if channels[name]!.subscribers[interest]?.isEmpty == true { channels[name]!.subscribers.removeValue(forKey: interest) }
            channels[name]!.index.release(interest)
            if channels[name]!.index.count == 0 { channels.removeValue(forKey: name) }
        }

        /// The schema changed within the epoch (a compatible stream update).
        mutating func updateSchema(epoch: String, schema: StreamSchema) {
            if epoch == self.epoch { self.schema = schema }
        }

        // MARK: Replay

        /// The attachment a replay belongs to, if it still is the current one.
        private func replaying(_ id: String, _ recipient: Recipient) -> Attached? {
            guard let a = attached[id], a.subscriber.recipient == recipient, !a.renewed else { return nil }
            return a
        }

        /// Whether a replay still belongs to its attachment.
        func isReplaying(_ id: String, recipient: Recipient) -> Bool {
            replaying(id, recipient) != nil
        }

        /// Joins live dispatch if the replay reached the position; otherwise says how far to
        /// replay, or to wait for the tail when the subscription starts beyond it.
        mutating func goLiveIfCaughtUp(_ id: String, recipient: Recipient, replayedTo seq: Int64) -> ReplayStep {
            guard var a = replaying(id, recipient) else { return .detached }
            if seq < position { return .replay(to: position) }
            if a.interest != nil { return .live }
            if seq > position {
                waitingForTail[id] = seq
                return .waitingForTail
            }
            makeLive(&a)
            attached[id] = a
            return .live
        }

        /// A replay found the events up to `seq` gone; false (nothing decided) if it no longer belongs.
        mutating func replayGap(_ id: String, recipient: Recipient, at seq: Int64, into actions: inout [Action]) -> Bool {
            guard let a = replaying(id, recipient) else { return false }
            actions.append(.notRecovered(recipient, info(a, position: StreamPosition(epoch: epoch, seq: seq))))
            return true
        }

        /// Delivers replayed events that matched, in seq order, with what the replay attached to
        /// each (`enriched`, parallel to `events`, empty when nothing is enriched); false
        /// (nothing decided) if the replay no longer belongs.
        mutating func deliverReplayed(
            _ id: String, recipient: Recipient, events: [StoredEvent], enriched: [String?] = [], into actions: inout [Action]
        ) -> Bool {
            guard replaying(id, recipient) != nil else { return false }
            for (i, event) in events.enumerated() {
                let sent = Self.deliver(&attached[id]!, event: event, enriched: i < enriched.count ? enriched[i] : nil, into: &actions)
                if sent, liveDeliverySpans > 0, let trace = event.trace {
                    actions.append(.traceDelivery(recipient, seq: event.seq, trace: trace, replayed: true))
                }
            }
            return true
        }

        mutating func makeLive(_ a: inout Attached) {
            guard a.interest == nil else { return }
            let name = a.channel.name
            if channels[name] == nil { channels[name] = ChannelState(channel: a.channel, index: ChannelIndex(channel: a.channel)) }
            // In place, as in `detach`.
            let interest = channels[name]!.index.acquire(params: a.params)
            channels[name]!.subscribers[interest, default: []].append(a.subscriber)
            a.interest = interest
        }

        func info(_ a: Attached, position: StreamPosition) -> SubscriptionInfo {
            StreamDispatch.notRecovered(
                subscription: a.subscriber.id, channel: a.channel.definition, params: a.params, stream: stream, position: position)
        }

        /// Starts the epoch over (the stream was recreated); the rest is in `reset(epoch:…)`.
        mutating func restart(epoch: String, schema: StreamSchema) {
            self.epoch = epoch
            self.schema = schema
            position = 0
        }
    }
}
