/// A place in a stream: the stream's epoch (which incarnation of the stream) and a seq in it.
/// `seq` is the last event already seen; resuming from a position delivers events after it.
public struct StreamPosition: Sendable, Hashable {
    public var epoch: String
    public var seq: Int64

    public init(epoch: String, seq: Int64) {
        self.epoch = epoch
        self.seq = seq
    }
}

/// Where a subscription starts delivering.
public enum StartPosition: Sendable, Hashable {
    /// Only events published after the subscription is made (or, for an existing durable
    /// subscription, from its acknowledged cursor).
    case latest
    /// From the oldest event the stream still retains.
    case earliest
    /// Events after this position.
    case position(StreamPosition)
    /// The events published at or after this time (ms since the epoch) that the stream still
    /// retains, then live: `"from": {"since": "2026-12-06T00:00:00Z"}`.
    case since(millis: Int64)
    /// The events of the last `millis` (from the broker's clock when it subscribes), then
    /// live: `"history": "24h"`.
    case history(millis: Int64)

    /// The longest `history`: 100 years, as the longest retention.
    public static let maxHistoryMillis: Int64 = Retention.maxAgeSecondsLimit * 1000
}
