import TocsinLoad

/// Waits for a condition, checking it each short tick, up to a deadline (`TocsinLoad.poll`). For
/// conditions no event announces (a counter reaching a value, a row disappearing); never a blind sleep.
public func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: @Sendable () async -> Bool) async throws {
    guard try await poll(timeout: timeout, condition) else { throw TestFailure("timed out waiting for \(what)") }
}
