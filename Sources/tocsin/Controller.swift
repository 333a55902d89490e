import ArgumentParser
import Metrics
import Prometheus
import Logging
import ServiceLifecycle
import TocsinAuth
import TocsinController
import TocsinCore
import TocsinStore
import TocsinHTTP

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

    @Option(
        name: .customLong("store"),
        help: "A PostgreSQL connection string (as `tocsin broker --store` takes) to share with other controllers: one leads, the others follow and take over within seconds of its death (env TOCSIN_STORE). Default: this controller runs alone, in memory.")
    var storeFlag: String?

    @Option(name: .customLong("leader-lease-ms"), help: "With --store: how long the leadership lease lasts on the database's clock.")
    var leaderLeaseMilliseconds = 2000

    @Flag(name: .customLong("no-rebalance"), help: "Assign and fail over, but never migrate clients to even out load.")
    var noRebalance = false

    @OptionGroup var auth: AuthOptions

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = Environment.get("TOCSIN_LOG_LEVEL") ?? "info"

    @OptionGroup var tls: ServerTLSOptions

    mutating func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        if advertise == nil, ListenAddress.isWildcard(host) {
            throw ValidationError("--host \(host) listens on every address: say which one to use with --advertise http://HOST:PORT")
        }
        guard heartbeatMilliseconds >= 10, leaseMilliseconds > heartbeatMilliseconds * 2 else {
            throw ValidationError("--lease-ms must be more than twice --heartbeat-ms (≥ 10), so one lost heartbeat does not kill a broker")
        }
        guard tolerance > 0, tolerance < 1, toleranceClients >= 0 else { throw ValidationError("--tolerance must be in (0, 1)") }
        guard (500...60_000).contains(leaderLeaseMilliseconds) else { throw ValidationError("--leader-lease-ms must be in 500...60000") }
        if let storeLocation {
            guard PostgresLocation.isConnectionString(storeLocation) else {
                throw ValidationError("--store (or TOCSIN_STORE) must be a PostgreSQL connection string; a controller keeps nothing in SQLite")
            }
            do {
                _ = try PostgresLocation(parsing: storeLocation)
            } catch {
                throw ValidationError("--store (or TOCSIN_STORE): \(error.message)")
            }
        }
    }

    /// `--store`, else `TOCSIN_STORE`.
    var storeLocation: String? { storeFlag ?? Environment.get("TOCSIN_STORE") }

    func run() async throws {
        let (logger, logLevelControl) = try bootstrapLogging(level: logLevel)
        var configuration = ControllerConfiguration()
        configuration.logLevel = logLevelControl
        configuration.host = host
        configuration.port = port
        configuration.advertisedURL = advertise
        configuration.leaseDuration = .milliseconds(leaseMilliseconds)
        configuration.heartbeatInterval = .milliseconds(heartbeatMilliseconds)
        configuration.rebalance.relativeTolerance = tolerance
        configuration.rebalance.absoluteTolerance = toleranceClients
        configuration.rebalanceCooldown = .milliseconds(cooldownMilliseconds)
        configuration.rebalanceEnabled = !noRebalance
        configuration.leaderLease = .milliseconds(leaderLeaseMilliseconds)
        configuration.leaderMargin = .milliseconds(leaderLeaseMilliseconds / 4)
        configuration.allowedOrigins = auth.allowedOrigins
        if let authority = try await auth.authority(defaultKeyFile: nil, port: port) {
            configuration.authentication = .tokens(authority)
            configuration.credential = MintedToken(authority: authority, client: "controller", scopes: [.cluster], nowMillis: Token.nowMillis).source
            auth.reloadOnHangup(authority, defaultKeyFile: nil)
        }
        // `validate` has checked the connection string.
        var ledger: (any ControllerLedger)?
        if let storeLocation, let location = try? PostgresLocation(parsing: storeLocation) {
            ledger = try await PostgresLedger.open(location: location, logger: logger)
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let tls = try await self.tls.load(logger: logger)
        configuration.tls = tls?.0
        let scheme = self.tls.scheme
        let host = self.host
        let app = buildController(
            configuration: configuration, logger: logger, metrics: registry, ledger: ledger,
            onListening: { port in
                print("tocsin controller listening on \(scheme)://\(host):\(port)")
                fflushStdout()
            })
        let group = ServiceGroup(
            configuration: .init(services: [app.service] + (tls.map { [$0.1] } ?? []), gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
