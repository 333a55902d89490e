import TocsinCore

/// A durable subscription attached to a session on this broker. Immutable; the dispatcher
/// keeps the mutable delivery state. Equal only to itself: each attachment is a new object, so
/// a replay of an attachment that was replaced (or renewed by a reset) is told apart.
final class LiveSubscription: Sendable, Hashable {
    let id: String
    let session: Session
    let channel: CompiledChannel
    /// Bound parameters in declared order, as attached. (A subscription with parameters bound
    /// to dataset records moves: its current ones are the dispatcher machine's, `params(of:)`.)
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

    static func == (a: LiveSubscription, b: LiveSubscription) -> Bool { a === b }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    var isRepetitive: Bool {
        if case .repetitive = channel.definition.mode { return true }
        return false
    }
}
