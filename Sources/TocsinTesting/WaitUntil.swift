/// Waits for a condition, checking it each short tick, up to a deadline. For conditions no event
/// announces (a counter reaching a value, a row disappearing); never a blind sleep.
public func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: @Sendable () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !(await condition()) {
        guard ContinuousClock.now < deadline else { throw TestFailure("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}
