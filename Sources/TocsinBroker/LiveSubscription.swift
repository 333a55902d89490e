import TocsinCore

/// A durable subscription attached to a session on this broker. Immutable; the dispatcher
/// keeps the mutable delivery state.
final class LiveSubscription: Sendable {
    let id: String
    let session: Session
    let channel: CompiledChannel
    /// Bound parameters in declared order.
    let params: [Value]
    /// The `{"type":"notify","subscription":"…"` part of every notify frame.
    let framePrefix: String

    init(id: String, session: Session, channel: CompiledChannel, params: [Value]) {
        self.id = id
        self.session = session
        self.channel = channel
        self.params = params
        self.framePrefix = NotifyFrame.prefix(subscription: id)
    }

    var isRepetitive: Bool {
        if case .repetitive = channel.definition.mode { return true }
        return false
    }

    func matches(_ record: Record, nowMillis: Int64) -> Bool {
        channel.predicate.evaluate(record, params, nowMillis)
    }

    /// `subscribed` without an id and `recovered: false`: events this subscription had not
    /// received are gone (its stream was recreated, or retention deleted them before they
    /// reached it); delivery goes on after `position`.
    func notRecovered(stream: String, position: StreamPosition) -> ServerMessage {
        var bound: [String: JSONValue] = [:]
        for (parameter, value) in zip(channel.definition.params, params) { bound[parameter.name] = value.json }
        return .subscribed(
            id: nil,
            SubscriptionInfo(subscription: id, channel: channel.name, params: bound, stream: stream, position: position, recovered: false))
    }
}
