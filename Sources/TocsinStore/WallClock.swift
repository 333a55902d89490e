import Foundation

/// The wall clock: milliseconds since the Unix epoch. The core never reads it; the store stamps
/// events and definitions with it, and the broker evaluates `now()` in channels with it. Both
/// take it injected (`SQLiteStore.Configuration.nowMillis`, `Broker.init(nowMillis:)`), so a
/// test can set the time.
public enum WallClock {
    /// The system's time of day.
    @Sendable public static func nowMillis() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded())
    }
}
