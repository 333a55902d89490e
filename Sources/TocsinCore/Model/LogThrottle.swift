/// Says when a recurring problem is worth another log line: the first time, then at most once
/// per `interval` while it keeps happening, with how many times it happened since the last
/// line. So a failure that repeats every few milliseconds (a full store refusing publishes,
/// acks that cannot be saved) is visible without flooding the log.
public struct LogThrottle: Sendable {
    public let interval: Duration
    private var lastLogged: ContinuousClock.Instant?
    private var suppressed = 0

    public init(interval: Duration = .seconds(60)) {
        self.interval = interval
    }

    /// Records one occurrence at `now`. Returns nil to stay quiet, or how many occurrences the
    /// line to log now stands for (this one and those suppressed since the last line).
    public mutating func occurred(at now: ContinuousClock.Instant = .now) -> Int? {
        suppressed += 1
        if let last = lastLogged, now - last < interval { return nil }
        lastLogged = now
        defer { suppressed = 0 }
        return suppressed
    }
}
