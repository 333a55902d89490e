import NIOCore
import Synchronization
import TocsinCore

/// A WebSocket connection's token clock: `token_expiring` goes out `warning` before the token
/// expires, and the connection closes (4401) when it expires unless a `refresh` moved it. Each
/// new grant (hello, refresh) replaces both timers.
final class TokenExpiry: Sendable {
    private let session: Session
    private let eventLoop: any EventLoop
    private let nowMillis: @Sendable () -> Int64
    private let warning: Duration
    private let timers = Mutex<(warn: Scheduled<Void>?, close: Scheduled<Void>?)>((nil, nil))

    init(session: Session, eventLoop: any EventLoop, nowMillis: @escaping @Sendable () -> Int64, warning: Duration) {
        self.session = session
        self.eventLoop = eventLoop
        self.nowMillis = nowMillis
        self.warning = warning
    }

    func schedule(for grant: Grant) {
        let now = nowMillis()
        // Saturating: a token may say it expires in the year 9999.
        let left = max(0, grant.expiresAtMillis.subtractingReportingOverflow(now).partialValue)
        let untilWarning = max(0, left - warning.milliseconds)
        let session = self.session
        let expiresAt = grant.expiresAtMillis
        let warn = eventLoop.scheduleTask(in: .milliseconds(min(untilWarning, Self.longest))) {
            guard untilWarning < Self.longest else { return }
            _ = session.send(.tokenExpiring(expiresAtMillis: expiresAt))
        }
        let close = eventLoop.scheduleTask(in: .milliseconds(min(left, Self.longest))) {
            guard left < Self.longest else { return }
            session.logger.info("closing a connection whose token expired", metadata: ["client": "\(session.client ?? "")"])
            session.close(.tokenExpired)
        }
        let previous = timers.withLock { timers in
            defer { timers = (warn, close) }
            return timers
        }
        previous.warn?.cancel()
        previous.close?.cancel()
    }

    func cancel() {
        let previous = timers.withLock { timers in
            defer { timers = (nil, nil) }
            return timers
        }
        previous.warn?.cancel()
        previous.close?.cancel()
    }

    /// Timers further out than this (a year) are not armed: the connection will not live that long.
    static let longest: Int64 = 365 * 86_400_000
}
