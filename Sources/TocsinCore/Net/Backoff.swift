/// Exponential backoff with full jitter, the one retry policy of every loop that reconnects
/// or re-registers: attempt `n` (0-based) waits a uniform random time in
/// `[0, min(maximum, initial·2ⁿ)]`. The random source is injected for tests.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration

    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The upper bound of attempt `attempt`'s delay (no jitter). Never overflows: the factor
    /// stops doubling at 2¹⁶ and the result is capped at `maximum`.
    public func ceiling(attempt: Int) -> Duration {
        let factor = 1 << Swift.min(Swift.max(attempt, 0), 16)
        return Swift.min(initial * factor, maximum)
    }

    /// The delay before retry `attempt`, drawn with `random` (a uniform value in 0...1).
    public func delay(attempt: Int, random: Double) -> Duration {
        let ceiling = ceiling(attempt: attempt)
        let ms = Double(ceiling.components.seconds) * 1000 + Double(ceiling.components.attoseconds) / 1e15
        return .milliseconds(Int64(ms * Swift.min(Swift.max(random, 0), 1)))
    }

    /// The delay before retry `attempt`, with the system's random numbers.
    public func delay(attempt: Int) -> Duration {
        delay(attempt: attempt, random: Double.random(in: 0...1))
    }
}
