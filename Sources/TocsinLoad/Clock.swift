#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The monotonic clock in nanoseconds: what a benchmark puts in an event ("t<nanos>") and
/// subtracts on arrival, in the same process.
public enum Monotonic {
    public static func nanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

/// Checks `condition` every `interval` until it holds or `timeout` has passed; returns whether
/// it held (checked once more at the deadline). For conditions no event announces; never a blind
/// sleep. Throws only `CancellationError`. `TocsinTesting.waitUntil` is this with a failure.
public func poll(
    timeout: Duration, every interval: Duration = .milliseconds(10), _ condition: @Sendable () async -> Bool
) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try await Task.sleep(for: interval)
    }
    return await condition()
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
