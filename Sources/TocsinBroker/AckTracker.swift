import Synchronization
import TocsinCore

/// Acknowledged positions waiting to be persisted; flushed in one transaction per interval
/// instead of one write per ack.
final class AckTracker: Sendable {
    private let pending = Mutex<[String: StreamPosition]>([:])

    func record(subscription: String, position: StreamPosition) {
        pending.withLock { p in
            if let old = p[subscription], old.epoch == position.epoch, old.seq >= position.seq { return }
            p[subscription] = position
        }
    }

    func forget(subscription: String) {
        pending.withLock { _ = $0.removeValue(forKey: subscription) }
    }

    func take() -> [String: StreamPosition] {
        pending.withLock { p in
            let taken = p
            p.removeAll(keepingCapacity: true)
            return taken
        }
    }

    /// Puts back positions whose write failed, unless newer ones arrived meanwhile.
    func restore(_ positions: [String: StreamPosition]) {
        pending.withLock { p in
            for (id, position) in positions where p[id] == nil { p[id] = position }
        }
    }
}
