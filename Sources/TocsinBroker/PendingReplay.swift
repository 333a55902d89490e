import TocsinCore

/// A replay to run after the reply that announced the subscription has been queued: one
/// subscription's, or (for a `hello`) a batch of them.
struct PendingReplay: Sendable {
    private struct One: Sendable {
        let subscription: LiveSubscription
        let dispatcher: StreamDispatcher
        let fromSeq: Int64
    }

    private let replays: [One]

    init(subscription: LiveSubscription, dispatcher: StreamDispatcher, fromSeq: Int64) {
        replays = [One(subscription: subscription, dispatcher: dispatcher, fromSeq: fromSeq)]
    }

    /// Runs `batch` as one: a client resuming thousands of subscriptions starts their replays a
    /// few hundred at a time, letting the event loop it may run on serve others in between,
    /// instead of queueing thousands of tasks ahead of everything else at once.
    init(batch: [PendingReplay]) {
        replays = batch.flatMap(\.replays)
    }

    func run() async {
        if replays.count == 1 {
            await Self.run(replays[0])
            return
        }
        await withDiscardingTaskGroup { group in
            for (i, replay) in replays.enumerated() {
                if i % 256 == 255 { await Task.yield() }
                group.addTask { await Self.run(replay) }
            }
        }
    }

    private static func run(_ replay: One) async {
        let subscription = replay.subscription
        do {
            try await replay.dispatcher.replay(subscription, from: replay.fromSeq)
        } catch {
            subscription.session.logger.error(
                "replay failed", metadata: ["subscription": "\(subscription.id)", "error": "\(error)"])
            subscription.session.send(
                .error(id: nil, TocsinError(.internalError, "replay of subscription \(subscription.id) failed; resubscribe to retry")))
        }
    }
}
