public import Logging
import Synchronization

/// The process's log level, changeable while it runs (the `log.level` live setting and the
/// `log-level` command). The executable wraps every log handler in `LiveLevelLogHandler`, which
/// reads its level from here; `startup` is the level the process was started with, which an
/// unset `log.level` goes back to.
public final class LogLevelControl: Sendable {
    public let startup: Logger.Level
    private let level: Atomic<UInt8>

    public init(startup: Logger.Level) {
        self.startup = startup
        level = Atomic(Self.code(startup))
    }

    public var current: Logger.Level { Self.levels[Int(level.load(ordering: .relaxed))] }

    public func set(_ value: Logger.Level) { level.store(Self.code(value), ordering: .relaxed) }

    private static let levels: [Logger.Level] = Logger.Level.allCases
    private static func code(_ level: Logger.Level) -> UInt8 { UInt8(levels.firstIndex(of: level) ?? 2) }
}

/// A log handler whose level is the `LogLevelControl`'s, forwarding to `inner`.
public struct LiveLevelLogHandler: LogHandler {
    public var inner: any LogHandler
    public let control: LogLevelControl

    public init(inner: any LogHandler, control: LogLevelControl) {
        self.inner = inner
        self.control = control
    }

    /// Set on one logger (`quiet.logLevel = .warning`): a floor for that logger's copies only.
    private var floor: Logger.Level = .trace

    /// The process's level, or this logger's floor when it is higher.
    public var logLevel: Logger.Level {
        get { max(control.current, floor) }
        set { floor = newValue }
    }

    public var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    public func log(event: LogEvent) {
        inner.log(event: event)
    }
}
