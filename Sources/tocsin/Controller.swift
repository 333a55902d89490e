import ArgumentParser
import Metrics
import Prometheus
import Logging
import ServiceLifecycle
import TocsinController
import TocsinCore

/// `tocsin controller`: the Broker Controller Service.
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Run the Broker Controller Service: broker leases, discovery, client assignment, rebalancing.")

    @Option(help: "Address to listen on.")
    var host: String = Environment.get("TOCSIN_CONTROLLER_HOST") ?? "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one.")
    var port: Int = 7300

    @Option(help: "The HTTP URL brokers and clients reach the controller at; required when --host is a wildcard address.")
    var advertise: String?

    @Option(name: .customLong("lease-ms"), help: "A broker silent for this long is dead.")
    var leaseMilliseconds = 3000

    @Option(name: .customLong("heartbeat-ms"), help: "How often brokers report (told to them in each lease).")
    var heartbeatMilliseconds = 500

    @Option(help: "Rebalance when a broker is further than this fraction from its region's mean load.")
    var tolerance = 0.10

    @Option(name: .customLong("tolerance-clients"), help: "…or further than this many clients, whichever is larger.")
    var toleranceClients = 5

    @Option(name: .customLong("cooldown-ms"), help: "After ordering migrations, wait this long before planning again.")
    var cooldownMilliseconds = 3000

    @Flag(name: .customLong("no-rebalance"), help: "Assign and fail over, but never migrate clients to even out load.")
    var noRebalance = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = Environment.get("TOCSIN_LOG_LEVEL") ?? "info"

    mutating func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        if advertise == nil, ListenAddress.isWildcard(host) {
            throw ValidationError("--host \(host) listens on every address: say which one to use with --advertise http://HOST:PORT")
        }
        guard heartbeatMilliseconds >= 10, leaseMilliseconds > heartbeatMilliseconds * 2 else {
            throw ValidationError("--lease-ms must be more than twice --heartbeat-ms (≥ 10), so one lost heartbeat does not kill a broker")
        }
        guard tolerance > 0, tolerance < 1, toleranceClients >= 0 else { throw ValidationError("--tolerance must be in (0, 1)") }
    }

    func run() async throws {
        let logger = try bootstrapLogging(level: logLevel)
        var configuration = ControllerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.advertisedURL = advertise
        configuration.leaseDuration = .milliseconds(leaseMilliseconds)
        configuration.heartbeatInterval = .milliseconds(heartbeatMilliseconds)
        configuration.rebalance.relativeTolerance = tolerance
        configuration.rebalance.absoluteTolerance = toleranceClients
        configuration.rebalanceCooldown = .milliseconds(cooldownMilliseconds)
        configuration.rebalanceEnabled = !noRebalance
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let host = self.host
        let app = buildController(
            configuration: configuration, logger: logger, metrics: registry,
            onListening: { port in
                print("tocsin controller listening on http://\(host):\(port)")
                fflushStdout()
            })
        let group = ServiceGroup(
            configuration: .init(services: [app.service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
