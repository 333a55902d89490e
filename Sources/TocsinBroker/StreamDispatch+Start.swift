import TocsinCore
import TocsinStore

extension StreamDispatch {
    /// Where a subscription will start, resolved against the stream's current state.
    struct Start: Sendable {
        var seq: Int64
        var recovered: Bool
    }

    static func resolve(_ from: StartPosition, acked: StreamPosition?, info: StreamInfo) -> Start {
        let oldest = info.firstSeq - 1
        func at(_ p: StreamPosition) -> Start {
            guard p.epoch == info.epoch else { return Start(seq: oldest, recovered: false) }
            if p.seq < oldest { return Start(seq: oldest, recovered: false) }
            return Start(seq: min(p.seq, info.lastSeq), recovered: true)
        }
        switch from {
        case .latest: return acked.map(at) ?? Start(seq: info.lastSeq, recovered: true)
        case .earliest: return Start(seq: oldest, recovered: true)
        case .position(let p): return at(p)
        case .since, .history:
            // Resolved to a position against the store before (`Subscriptions.position(since:)`);
            // from the oldest retained event if one is not.
            return Start(seq: oldest, recovered: true)
        }
    }
}
