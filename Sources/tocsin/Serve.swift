import ArgumentParser
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import TocsinBroker

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a broker with its HTTP API and WebSocket endpoint on an embedded SQLite store.")

    @Option(help: "Address to listen on (env TOCSIN_HOST).")
    var host: String = Environment.get("TOCSIN_HOST") ?? "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one (env TOCSIN_PORT).")
    var port: Int = 7400

    @Option(name: .customLong("data-dir"), help: "Directory of the SQLite store (env TOCSIN_DATA_DIR).")
    var dataDirectory: String = Environment.get("TOCSIN_DATA_DIR") ?? "./tocsin-data"

    @Option(name: .customLong("broker-id"), help: "This broker's id, reported to clients (env TOCSIN_BROKER_ID).")
    var brokerID: String = Environment.get("TOCSIN_BROKER_ID") ?? "broker-1"

    @Flag(help: "Do not create the example 'emergencies' stream and channels in an empty store.")
    var empty = false

    @Flag(name: .customLong("no-fsync"), help: "Commit with synchronous=NORMAL: survives process crashes, not power loss.")
    var noFsync = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (env TOCSIN_LOG_LEVEL).")
    var logLevel: String = Environment.get("TOCSIN_LOG_LEVEL") ?? "info"

    mutating func validate() throws {
        if let text = Environment.get("TOCSIN_PORT"), !CommandLine.arguments.contains("--port") {
            guard let value = Int(text), (0...65535).contains(value) else {
                throw ValidationError("TOCSIN_PORT must be a port number (0-65535), got '\(text)'")
            }
            port = value
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
    }

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "tocsin")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var configuration = BrokerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.brokerID = brokerID
        configuration.databasePath = dataDirectory + "/tocsin.sqlite"
        configuration.seedExample = !empty
        configuration.durableCommits = !noFsync
        let host = self.host
        let dataDirectory = self.dataDirectory
        let app = try await buildBroker(configuration: configuration, logger: logger, metrics: registry) { port in
            // One line on stdout, so scripts and tests can read the port.
            print("tocsin listening on http://\(host):\(port) (WebSocket ws://\(host):\(port)/v1/ws), data in \(dataDirectory)")
            fflushStdout()
        }
        let group = ServiceGroup(
            configuration: .init(services: [app.service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func fflushStdout() { fflush(nil) }
