import Foundation
import Logging
import ServiceLifecycle
public import TocsinBroker
import TocsinClient
import TocsinCore
public import TocsinStore

/// A broker running in this process on a free port, on a fresh store (an SQLite file in its directory).
public struct TestBroker: Sendable {
    public let port: Int
    public let broker: Broker
    public let directory: String
    /// Every HTTP route with what it requires, as the broker registered them.
    public var routes: [String] = []

    public var httpURL: String { "http://127.0.0.1:\(port)" }
    public var webSocketURL: String { "ws://127.0.0.1:\(port)/v1/ws" }

    /// Starts a broker, runs `body`, then shuts the broker down gracefully. A directory it
    /// made itself (none given) is removed afterwards. `store` says which store to open in the
    /// directory; `wrap` may put a store of the test's own around it (one that fails on demand).
    public static func with<T: Sendable>(
        directory: String? = nil,
        store: (_ directory: String) -> StoreConfiguration = { StoreConfiguration.testing(in: $0) },
        wrap: (any Store) -> any Store = { $0 },
        _ configure: (inout BrokerConfiguration) -> Void = { _ in },
        _ body: @Sendable (TestBroker) async throws -> T
    ) async throws -> T {
        let made = directory == nil ? TemporaryDirectory.make() : nil
        defer { if let made { TemporaryDirectory.remove(made) } }
        let directory = directory ?? made!
        var configuration = BrokerConfiguration()
        configuration.port = 0
        configuration.ackFlushInterval = .milliseconds(20)
        // The whole suite loads two cores so heavily early on that a clean shutdown has taken
        // more than the product's 10 s (and was then cancelled, failing its test). Tests of the
        // grace itself set their own.
        configuration.shutdownGrace = .seconds(30)
        configure(&configuration)
        var logger = Logger(label: "test-broker")
        logger.logLevel = .warning
        let (ports, portsContinuation) = AsyncStream.makeStream(of: Int.self)
        let raw = try await store(directory).open(logger: logger)
        // The store closes when its last reference goes (`consume`: this function keeps none).
        // Returning only then means a test that reopens the directory next does not share the
        // file with a store whose tasks may still be writing.
        weak let closing = raw as? any Store & AnyObject
        let result = try await run(
            store: wrap(consume raw), directory: directory, configuration: configuration, logger: logger,
            ports: ports, portsContinuation, body)
        try await waitUntil("the broker's store is closed", timeout: .seconds(10)) { closing == nil }
        return result
    }

    private static func run<T: Sendable>(
        store: any Store, directory: String, configuration: BrokerConfiguration, logger: Logger,
        ports: AsyncStream<Int>,
        _ portsContinuation: AsyncStream<Int>.Continuation, _ body: @Sendable (TestBroker) async throws -> T
    ) async throws -> T {
        let app = try await buildBroker(configuration: configuration, store: store, logger: logger) { port in
            portsContinuation.yield(port)
        }
        return try await runService(app.service, logger: logger, ports: ports) { port in
            try await body(TestBroker(port: port, broker: app.broker, directory: directory, routes: app.routes))
        }
    }
}

extension StoreConfiguration {
    /// The store tests run brokers on: `tocsin.sqlite` in `directory`, commits not synced.
    public static func testing(in directory: String, maxBytes: Int64? = nil) -> StoreConfiguration {
        .sqlite(.init(path: directory + "/tocsin.sqlite", synchronousFull: false, maxBytes: maxBytes))
    }
}

/// Runs a service that reports its port on `ports`, runs `body` with the port, then shuts the
/// service down gracefully (also when `body` throws).
func runService<T: Sendable>(
    _ service: any Service, logger: Logger, ports: AsyncStream<Int>, _ body: @Sendable (Int) async throws -> T
) async throws -> T {
    let group = ServiceGroup(configuration: .init(services: [service], logger: logger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("the service did not start") }
        do {
            let result = try await body(port)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        } catch {
            await group.triggerGracefulShutdown()
            tasks.cancelAll()
            throw error
        }
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public enum TemporaryDirectory {
    public static func make() -> String {
        let path = NSTemporaryDirectory() + "tocsin-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    public static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }
}
