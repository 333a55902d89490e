import TocsinCore
import TocsinStore

extension StreamDispatch.StateMachine {
    // MARK: Delivery and repetitive batches

    /// Sends (or, for repetitive channels, collects) one matching event, with what its channel's
    /// `enrich` clauses attached; true if a frame was decided.
    @discardableResult
    static func deliver(_ a: inout Attached, event: StoredEvent, enriched: String?, into actions: inout [Action]) -> Bool {
        switch a.subscriber.kind {
        case .push:
            let suffix = NotifyFrame.suffix(seq: event.seq, enriched.map { .enrichedEvent(event.json, enriched: $0) } ?? .event(event.json))
            actions.append(.send(a.subscriber.recipient, .notify(prefix: a.subscriber.prefix, suffix: suffix)))
            return true
        case .notify:
            let suffix = NotifyFrame.suffix(seq: event.seq, .count(1))
            actions.append(.send(a.subscriber.recipient, .notify(prefix: a.subscriber.prefix, suffix: suffix)))
            return true
        case .repetitive(_, let push):
            a.pendingCount += 1
            a.pendingSeq = event.seq
            guard push else { return false }
            a.pending.append(EventPayload(seq: event.seq, json: event.json, enriched: enriched))
            a.pendingBytes += event.json.utf8.count + (enriched?.utf8.count ?? 0)
            guard a.pending.count >= StreamDispatch.maxBatchEvents || a.pendingBytes >= StreamDispatch.maxBatchBytes else { return false }
            return sendPending(&a, into: &actions)
        }
    }

    /// Sends what repetitive subscriptions collected, for those whose period is due. Returns
    /// whether any repetitive subscription is attached.
    mutating func flushRepetitive(nowMillis: Int64, into actions: inout [Action]) -> Bool {
        for id in repetitive where attached[id] != nil {
            Self.flushIfDue(&attached[id]!, nowMillis: nowMillis, into: &actions)
        }
        return !repetitive.isEmpty
    }

    /// Sends the batch of a repetitive subscription if its period is due. The first visit only
    /// sets when the period ends.
    static func flushIfDue(_ a: inout Attached, nowMillis: Int64, into actions: inout [Action]) {
        guard case .repetitive(let period, _) = a.subscriber.kind else { return }
        // The period is bounded (`ChannelMode.maxPeriodMillis`); a clock at the end of time
        // still must not trap.
        let (next, overflow) = nowMillis.addingReportingOverflow(period)
        let nextFlush = overflow ? Int64.max : next
        if a.nextFlushMillis == 0 { a.nextFlushMillis = nextFlush }
        guard nowMillis >= a.nextFlushMillis else { return }
        a.nextFlushMillis = nextFlush
        sendPending(&a, into: &actions)
    }

    /// Sends what a repetitive subscription collected, if anything; true if a frame was decided.
    @discardableResult
    static func sendPending(_ a: inout Attached, into actions: inout [Action]) -> Bool {
        guard a.pendingCount > 0, case .repetitive(_, let push) = a.subscriber.kind else { return false }
        let n: ServerMessage.Notification = push ? .events(a.pending) : .count(a.pendingCount)
        // Fresh storage, not `removeAll(keepingCapacity:)`: the frame's text is built, the array is not kept.
        a.pending = []
        a.pendingBytes = 0
        a.pendingCount = 0
        actions.append(.send(a.subscriber.recipient, .notify(prefix: a.subscriber.prefix, suffix: NotifyFrame.suffix(seq: a.pendingSeq, n))))
        return true
    }

    // MARK: Reset

    /// The stream was recreated: its epoch starts over at seq 0. Every attached subscription is
    /// recompiled against the new schema (`recompile` returns nil when its channel no longer
    /// compiles or binds), told with a `subscribed` (recovered false, seq 0), and stays live, so
    /// it gets the new epoch from its first event; an attachment renewed so has no replay any
    /// more. One whose channel does not recompile is detached and told `unsubscribed`.
    mutating func reset(
        epoch: String, schema: StreamSchema, recompile: (_ channel: String, _ params: [Value]) -> CompiledChannel?,
        into actions: inout [Action]
    ) {
        restart(epoch: epoch, schema: schema)
        channels = [:]
        waitingForTail = [:]
        let previous = attached
        attached = [:]
        repetitive = []
        for old in previous.values {
            let recipient = old.subscriber.recipient, id = old.subscriber.id
            guard let channel = recompile(old.channel.name, old.params) else {
                actions.append(.unsubscribed(recipient, subscription: id))
                continue
            }
            _ = attach(id, recipient: recipient, channel: channel, params: old.params)
            var renewed = attached[id]!
            renewed.renewed = true
            makeLive(&renewed)
            attached[id] = renewed
            actions.append(.notRecovered(recipient, info(renewed, position: StreamPosition(epoch: epoch, seq: 0))))
        }
    }
}
