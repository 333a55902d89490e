import Logging
import Synchronization
public import TocsinController
public import TocsinCore
public import TocsinStore

/// A clock tests move by hand: leases expire when the test says so, not when a machine is slow.
public final class ManualClock: Sendable {
    private let current = Mutex<Duration>(.zero)
    public init() {}
    public var now: ClusterTime { current.withLock { $0 } }
    public func advance(by d: Duration) { current.withLock { $0 += d } }
}

/// A controller running in this process on a free port.
public struct TestController: Sendable {
    public let port: Int
    public let controller: Controller
    /// Every HTTP route with what it requires, as registered.
    public var routes: [String] = []
    public var url: String { "http://127.0.0.1:\(port)" }

    /// Starts a controller, runs `body`, then shuts it down. With a `clock`, the controller's own
    /// tick loop is effectively off (a one-hour interval): the test calls `controller.tick()`
    /// (or, with a `ledger`, `controller.step()`).
    public static func with<T: Sendable>(
        clock: ManualClock? = nil, ledger: (any ControllerLedger)? = nil,
        _ configure: (inout ControllerConfiguration) -> Void = { _ in },
        _ body: @Sendable (TestController) async throws -> T
    ) async throws -> T {
        var configuration = ControllerConfiguration()
        configuration.port = 0
        if clock != nil { configuration.tickInterval = .seconds(3600) }
        configure(&configuration)
        var logger = Logger(label: "test-controller")
        logger.logLevel = .warning
        let (ports, portsContinuation) = AsyncStream.makeStream(of: Int.self)
        var now: (@Sendable () -> ClusterTime)? = nil
        if let clock { now = { clock.now } }
        let app = buildController(
            configuration: configuration, logger: logger, now: now, ledger: ledger,
            onListening: { port in portsContinuation.yield(port) })
        return try await runService(app.service, logger: logger, ports: ports) { port in
            try await body(TestController(port: port, controller: app.controller, routes: app.routes))
        }
    }
}
