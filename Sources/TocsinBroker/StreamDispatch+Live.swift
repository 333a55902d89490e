import TocsinCore
import TocsinStore

extension StreamDispatch.StateMachine {
    // MARK: Live dispatch

    /// Matches committed events (in seq order; those at or before the position are skipped)
    /// and appends their notifications; returns how many notifications it decided (repetitive
    /// matches count when their batch is sent). Events after a hole first tell every live
    /// subscription that the events in the hole are gone.
    mutating func dispatch(_ events: some Collection<StoredEvent>, nowMillis: Int64, into actions: inout [Action]) -> Int {
        var sent = 0
        var unreadable: [Int64] = []
        for event in events where event.seq > position {
            if event.seq > position + 1 { tellGap(before: event.seq, into: &actions) }
            if !waitingForTail.isEmpty { releaseWaiting() }
            position = event.seq
            guard !channels.isEmpty else { continue }
            guard let record = StreamDispatch.record(event, schema: schema) else {
                unreadable.append(event.seq)
                continue
            }
            var pushSuffix: String? = nil
            let trace = liveDeliverySpans > 0 ? event.trace : nil
            var spans = 0
            for state in channels.values {
                matched.removeAll(keepingCapacity: true)
                state.index.match(record, nowMillis: nowMillis, into: &matched)
                let enriching = enrich != nil && !state.channel.enrichments.isEmpty
                for interest in matched {
                    // One enrichment per interest: its subscribers share the bound params.
                    var enriched: String?? = enriching ? nil : .some(nil)
                    var interestSuffix: String? = nil
                    for subscriber in state.subscribers[interest] ?? [] {
                        if enriched == nil {
                            guard let params = attached[subscriber.id]?.params else { continue }
                            enriched = .some(enrich!(state.channel, record, params, nowMillis))
                        }
                        guard case .push = subscriber.kind else {
                            guard attached[subscriber.id] != nil else { continue }
                            if Self.deliver(&attached[subscriber.id]!, event: event, enriched: enriched!, into: &actions) {
                                sent += 1
                                if let trace, spans < liveDeliverySpans {
                                    spans += 1
                                    actions.append(.traceDelivery(subscriber.recipient, seq: event.seq, trace: trace, replayed: false))
                                }
                            }
                            continue
                        }
                        let suffix: String
                        if let x = enriched! {
                            if interestSuffix == nil { interestSuffix = NotifyFrame.suffix(seq: event.seq, .enrichedEvent(event.json, enriched: x)) }
                            suffix = interestSuffix!
                        } else {
                            if pushSuffix == nil { pushSuffix = NotifyFrame.suffix(seq: event.seq, .event(event.json)) }
                            suffix = pushSuffix!
                        }
                        actions.append(.send(subscriber.recipient, .notify(prefix: subscriber.prefix, suffix: suffix)))
                        sent += 1
                        if let trace, spans < liveDeliverySpans {
                            spans += 1
                            actions.append(.traceDelivery(subscriber.recipient, seq: event.seq, trace: trace, replayed: false))
                        }
                    }
                }
            }
        }
        if !waitingForTail.isEmpty { releaseWaiting() }
        if !unreadable.isEmpty { actions.append(.reportUnreadable(unreadable)) }
        return sent
    }

    /// Whether events this process has just committed follow on from the position, so the
    /// committing thread may dispatch them: same epoch, and the first one (`first`; nil for
    /// the later chunks of one commit) is the next seq. Otherwise the tail will.
    func follows(epoch: String, first: Int64?) -> Bool {
        guard epoch == self.epoch else { return false }
        guard let first else { return true }
        return first == position + 1
    }

    /// The events before `seq` are gone (deleted before they were dispatched): every live
    /// subscription may have missed some, and is told so.
    mutating func tellGap(before seq: Int64, into actions: inout [Action]) {
        let position = StreamPosition(epoch: epoch, seq: seq - 1)
        for a in attached.values where a.interest != nil {
            actions.append(.notRecovered(a.subscriber.recipient, info(a, position: position)))
        }
    }

    /// Makes live the waiting subscriptions the tail has now reached.
    mutating func releaseWaiting() {
        for (id, seq) in waitingForTail where seq <= position {
            waitingForTail.removeValue(forKey: id)
            guard var a = attached[id] else { continue }
            makeLive(&a)
            attached[id] = a
        }
    }
}
