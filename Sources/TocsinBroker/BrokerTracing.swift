import Tracing
import TocsinCore
import TocsinStore

/// The broker's spans, made only when it has a tracer (`BrokerConfiguration.tracer`; without
/// one there is no `BrokerTracing`, and no event's trace is looked at):
///
/// - `publish <stream>` (producer), from a publish's arrival to its reply, a child of the
///   publisher's `traceparent` when it sent one;
/// - `commit` inside it, from the append to durable (queueing, the transaction, the sync);
/// - `deliver <channel>` (consumer), for each notification of a traced event, live or
///   replayed, a child of the publish span.
///
/// The publish span's `traceparent` is stored with the events when it is sampled, so a
/// delivery joins the publish's trace on whichever broker makes it: one tailing the same
/// PostgreSQL store, or the one a subscriber migrated to, replaying what it missed.
struct BrokerTracing: Sendable {
    let tracer: any Tracer
    let broker: String
    /// Live notifications of one traced event that get a `deliver` span, on this broker.
    let deliverySpansPerEvent: Int

    /// A publish's span; `parent`: the publisher's traceparent, if valid (an invalid one is
    /// ignored, as W3C Trace Context asks of a header).
    func publish(stream: String, events: Int, parent: String?, transport: String) -> PublishTrace {
        let span = tracer.startSpan("publish \(stream)", context: context(parent), ofKind: .producer)
        span.attributes["messaging.system"] = "tocsin"
        span.attributes["messaging.operation.type"] = "send"
        span.attributes["messaging.destination.name"] = stream
        span.attributes["messaging.batch.message_count"] = events
        span.attributes["network.transport.protocol"] = transport
        span.attributes["tocsin.broker"] = broker
        var carrier: [String: String] = [:]
        tracer.inject(span.context, into: &carrier, using: TraceCarrier())
        let stored = carrier["traceparent"].flatMap { TraceParent.isSampled($0) ? $0 : nil }
        return PublishTrace(tracer: tracer, span: span, traceparent: stored)
    }

    /// A notification of a traced event was queued on `subscription`'s connection.
    func delivered(_ subscription: LiveSubscription, seq: Int64, trace: String, replayed: Bool) {
        let span = tracer.startSpan("deliver \(subscription.channel.name)", context: context(trace), ofKind: .consumer)
        span.attributes["messaging.system"] = "tocsin"
        span.attributes["messaging.operation.type"] = "process"
        span.attributes["messaging.destination.name"] = subscription.channel.definition.stream
        span.attributes["tocsin.channel"] = subscription.channel.name
        span.attributes["tocsin.subscription"] = subscription.id
        span.attributes["tocsin.seq"] = Int(seq)
        span.attributes["tocsin.replayed"] = replayed
        span.attributes["tocsin.broker"] = broker
        if let client = subscription.session.client { span.attributes["tocsin.client"] = client }
        span.end()
    }

    /// A client told to move to another broker (a drain, a rebalance, a scale-in). Its
    /// deliveries there join the traces of the events it receives, through the stored traceparents.
    func migrated(client: String?, to target: String, reason: String) {
        let span = tracer.startSpan("migrate", context: .topLevel, ofKind: .internal)
        if let client { span.attributes["tocsin.client"] = client }
        span.attributes["tocsin.broker"] = broker
        span.attributes["tocsin.migrate.to"] = target
        span.attributes["tocsin.migrate.reason"] = reason
        span.end()
    }

    private func context(_ traceparent: String?) -> ServiceContext {
        var context = ServiceContext.topLevel
        if let traceparent, TraceParent.isValid(traceparent) {
            tracer.extract(["traceparent": traceparent], into: &context, using: TraceCarrier())
        }
        return context
    }
}

/// One publish's spans: `publish` from `BrokerTracing.publish` on, `commit` from `committing` on.
struct PublishTrace: Sendable {
    let tracer: any Tracer
    let span: any Span
    /// What the events are stored with: the publish span's traceparent, when it is sampled.
    let traceparent: String?

    func committing() -> any Span {
        tracer.startSpan("commit", context: span.context, ofKind: .internal)
    }

    /// Ends both spans (`commit` nil: refused before it reached the store).
    func end(_ commit: (any Span)?, _ result: Result<Appended, TocsinError>) {
        switch result {
        case .success(let appended):
            for s in [commit, span].compactMap({ $0 }) {
                s.attributes["tocsin.epoch"] = appended.epoch
                if let first = appended.seqs.first, let last = appended.seqs.last {
                    s.attributes["tocsin.seq.first"] = Int(first)
                    s.attributes["tocsin.seq.last"] = Int(last)
                }
                s.attributes["tocsin.duplicate"] = appended.duplicate
            }
        case .failure(let error):
            for s in [commit, span].compactMap({ $0 }) {
                s.attributes["tocsin.error.code"] = error.code.rawValue
                s.setStatus(SpanStatus(code: .error, message: error.message))
            }
        }
        commit?.end()
        span.end()
    }
}

/// Trace context in and out of a plain dictionary (`traceparent`, `tracestate`).
struct TraceCarrier: Injector, Extractor {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }

    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key]
    }
}
