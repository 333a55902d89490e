import TocsinCore
import TocsinStore

/// A stream's tail: follows the store's change feed and dispatches what `dispatchCommitted`
/// did not — other processes' events, and this process's when the dispatcher was behind.
struct StreamTail {
    let dispatcher: StreamDispatcher

    /// Follows the store's change feed and dispatches what `dispatchCommitted` did not, until
    /// cancelled: other processes' events, and this process's when the tail was behind. Events
    /// still in the feed come from there, others from the store. The stream is read again only
    /// when the feed does not know its epoch or knows another one (it was recreated).
    func run() async {
        let (changes, stream, store) = (dispatcher.store.changes, dispatcher.stream, dispatcher.store)
        var retry = StoreRetry("the tail of a stream")
        while !Task.isCancelled {
            let current = dispatcher.epoch
            await changes.wait(stream: stream, after: dispatcher.dispatched, epoch: current)
            if Task.isCancelled { return }
            do {
                if changes.epoch(of: stream) != current {
                    guard let info = try await store.stream(named: stream) else { return }
                    if info.epoch != current {
                        dispatcher.reset(to: info)
                        continue
                    }
                }
                var from = dispatcher.position
                while true {
                    let events: [StoredEvent]
                    if let recent = changes.recentEvents(stream: stream, epoch: current, after: from, limit: 1000) {
                        events = recent
                    } else {
                        events = try await store.readEvents(stream: stream, after: from, limit: 1000)
                    }
                    guard let last = events.last else { break }
                    dispatcher.dispatch(events)
                    // Up to 1000 events matched: let the event loop this may run on serve its connections.
                    await Task.yield()
                    from = max(last.seq, dispatcher.position)
                    if from >= changes.lastSeq(of: stream) && events.count < 1000 { break }
                }
                retry.succeeded(logger: dispatcher.logger, metadata: ["stream": "\(stream)"])
            } catch {
                // The store out of reach (or any failure): the feed still says there is more,
                // so the next round reads again, after a backoff; nothing is skipped.
                await retry.failed(error, logger: dispatcher.logger, metadata: ["stream": "\(stream)"])
            }
        }
    }
}
