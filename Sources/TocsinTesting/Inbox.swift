public import TocsinClient
public import TocsinCore
import TocsinDev
import Synchronization

/// Collects a connection's unsolicited frames so a test can wait for the next one with a deadline
/// (never a blind sleep).
public final class Inbox: Sendable {
    private struct State {
        var buffer: [ServerMessage] = []
        var waiter: (id: Int, continuation: CheckedContinuation<ServerMessage?, Never>)?
        var nextWaiter = 0
        var finished = false
    }

    private let state = Mutex(State())

    public init(_ connection: Connection) {
        Task { [self] in
            for await message in connection.events { self.put(message) }
            self.finish()
        }
    }

    private func put(_ message: ServerMessage) {
        let waiter = state.withLock { s -> CheckedContinuation<ServerMessage?, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w.continuation
            }
            s.buffer.append(message)
            return nil
        }
        waiter?.resume(returning: message)
    }

    private func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<ServerMessage?, Never>? in
            s.finished = true
            let w = s.waiter
            s.waiter = nil
            return w?.continuation
        }
        waiter?.resume(returning: nil)
    }

    /// Whether the connection closed (every frame before it is still buffered).
    public var isFinished: Bool { state.withLock { $0.finished } }

    /// The next frame, or a failure when none arrives within `timeout`.
    public func next(timeout: Duration = .seconds(10)) async throws -> ServerMessage {
        let message = await firstOrNil(within: timeout) { await self.take() }
        guard let message else { throw TestFailure("no frame within \(timeout)") }
        return message
    }

    /// Waits for `count` notify frames, failing if anything else arrives first or time runs out.
    public func notifications(_ count: Int, timeout: Duration = .seconds(10)) async throws -> [(subscription: String, seq: Int64, ServerMessage.Notification)] {
        var out: [(String, Int64, ServerMessage.Notification)] = []
        while out.count < count {
            let message = try await next(timeout: timeout)
            guard case .notify(let s, let seq, let n) = message else {
                throw TestFailure("expected notify, got \(message.encoded)")
            }
            out.append((s, seq, n))
        }
        return out
    }

    /// True if no frame arrives within `quiet` (to check that nothing more is delivered).
    public func isQuiet(for quiet: Duration) async -> Bool {
        (try? await next(timeout: quiet)) == nil
    }

    private func take() async -> ServerMessage? {
        let id = state.withLock { s -> Int in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<ServerMessage?, Never>) in
                let ready: ServerMessage?? = state.withLock { s in
                    if !s.buffer.isEmpty { return .some(s.buffer.removeFirst()) }
                    if s.finished || Task.isCancelled { return .some(nil) }
                    s.waiter = (id, c)
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<ServerMessage?, Never>? in
                guard let w = s.waiter, w.id == id else { return nil }
                s.waiter = nil
                return w.continuation
            }
            c?.resume(returning: nil)
        }
    }
}

