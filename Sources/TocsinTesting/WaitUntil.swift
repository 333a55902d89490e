import TocsinLoad

/// Waits for a condition, checking it each short tick, up to a deadline (`TocsinLoad.poll`). For
/// conditions no event announces (a counter reaching a value, a row disappearing); never a blind sleep.
public func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: @Sendable () async -> Bool) async throws {
    guard try await poll(timeout: timeout, condition) else { throw TestFailure("timed out waiting for \(what)") }
}

/// Waits for `produce` to give a value, trying each short tick, up to a deadline; returns it.
public func waitForValue<T: Sendable>(_ what: String, timeout: Duration = .seconds(20), _ produce: @Sendable () async -> T?) async throws -> T {
    let found = Found<T>()
    try await waitUntil(what, timeout: timeout) {
        guard let value = await produce() else { return false }
        found.value = value
        return true
    }
    return found.value!
}

/// `waitForValue`'s result: written and read by the one polling task, in turn.
private final class Found<T>: @unchecked Sendable {
    var value: T?
}
