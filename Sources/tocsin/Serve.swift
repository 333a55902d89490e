import ArgumentParser
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import TocsinAuth
import TocsinBroker
import TocsinCore
import TocsinStore
import TocsinHTTP

/// The options every broker process takes (`serve` and `broker`).
struct BrokerOptions: ParsableArguments {
    @OptionGroup var auth: AuthOptions

    @Option(help: "Address to listen on (env TOCSIN_HOST).")
    var host: String = Environment.get("TOCSIN_HOST") ?? "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one (env TOCSIN_PORT).")
    var port: Int = 7400

    @Option(name: .customLong("data-dir"), help: "Directory of the SQLite store (env TOCSIN_DATA_DIR).")
    var dataDirectory: String = Environment.get("TOCSIN_DATA_DIR") ?? "./tocsin-data"

    @Option(
        name: .customLong("store"),
        help: "A PostgreSQL connection string (postgres://user:pass@host:5432/db, or host=a,b dbname=… user=… for failover; pool=N and timeout=S ride along) to share one store across hosts (env TOCSIN_STORE). Default: the SQLite file in --data-dir.")
    var storeFlag: String?

    /// `--store`, else `TOCSIN_STORE`.
    var storeLocation: String? { storeFlag ?? Environment.get("TOCSIN_STORE") }

    @Option(name: .customLong("broker-id"), help: "This broker's id, reported to clients (env TOCSIN_BROKER_ID).")
    var brokerID: String = Environment.get("TOCSIN_BROKER_ID") ?? "broker-1"

    @Flag(help: "Do not create the example 'emergencies' stream and channels in an empty store.")
    var empty = false

    @Flag(name: .customLong("no-fsync"), help: "Commit with synchronous=NORMAL: survives process crashes, not power loss.")
    var noFsync = false

    @Option(
        name: .customLong("max-store-size"),
        help: "Most the SQLite database may hold, e.g. 512MB or 20GiB; past it publishes fail with store_full until retention frees space (env TOCSIN_MAX_STORE_SIZE). Default: the disk's size.")
    var maxStoreSizeFlag: String?

    /// `--max-store-size`, else `TOCSIN_MAX_STORE_SIZE`.
    var maxStoreSize: String? { maxStoreSizeFlag ?? Environment.get("TOCSIN_MAX_STORE_SIZE") }

    /// `--max-store-size` in bytes (`validate` has rejected a value that is not a size).
    var maxStoreBytes: Int64? { maxStoreSize.flatMap { try? ByteCount.parse($0) } }

    @Option(name: .customLong("head-timeout"), help: "Seconds an HTTP request's head may take to arrive (also the keep-alive idle time); 408 after.")
    var headTimeout = 10.0

    @Option(name: .customLong("body-timeout"), help: "Seconds an HTTP request's body may take to arrive after its head; 408 after.")
    var bodyTimeout = 30.0

    @Option(name: .customLong("first-message-timeout"), help: "Seconds a WebSocket connection may stay silent after its upgrade; closed (1008) after.")
    var firstMessageTimeout = 10.0

    @Option(
        name: .customLong("keepalive"),
        help: "Seconds between the pings a WebSocket connection gets; one that sends nothing for a whole period after a ping is closed (1001).")
    var keepalive = 30.0

    @Option(name: .customLong("shutdown-grace"), help: "Seconds connections get to finish on SIGTERM before the rest are closed.")
    var shutdownGrace = 10.0

    @Option(
        name: .customLong("max-connections"),
        help: "Most connections open at once; more are answered 503 and closed. Default: the descriptor limit (ulimit -n) less 64.")
    var maxConnections: Int?

    @Option(
        name: .customLong("max-outbound-bytes"),
        help: "Bytes a WebSocket connection may have waiting to be sent before it is closed as a slow consumer, e.g. 2MiB (at least 64KiB).")
    var maxOutboundBytesText = "2MiB"

    /// `--max-outbound-bytes` in bytes (`validate` has checked it).
    var maxOutboundBytes: Int { Int(clamping: (try? ByteCount.parse(maxOutboundBytesText)) ?? 2 << 20) }
    @Option(
        name: .customLong("max-subscriptions-per-client"),
        help: "Most durable subscriptions one client id may hold; 0 for no limit (env TOCSIN_MAX_SUBSCRIPTIONS_PER_CLIENT).")
    var maxSubscriptionsPerClient: Int = Environment.get("TOCSIN_MAX_SUBSCRIPTIONS_PER_CLIENT").flatMap { Int($0) } ?? 10_000

    @Option(
        name: .customLong("fetch-cache-entries"),
        help: "Most notify-then-fetch result pages the broker keeps to serve subscribers of one interest from one computation; 0 turns the cache off (env TOCSIN_FETCH_CACHE_ENTRIES).")
    var fetchCacheEntries: Int = Environment.get("TOCSIN_FETCH_CACHE_ENTRIES").flatMap { Int($0) } ?? 10_000

    @Option(name: .customLong("rate-publish"), help: "Events one token may publish a second (bursts of twice that, at least 10000); 0 for no limit.")
    var ratePublish: Double = 10_000

    @Option(name: .customLong("rate-subscribe"), help: "Subscribes one token may make a second (bursts of ten times that); 0 for no limit.")
    var rateSubscribe: Double = 50

    @Option(name: .customLong("rate-connect"), help: "WebSocket connections one token may open a second (bursts of five times that); 0 for no limit.")
    var rateConnect: Double = 10

    @Option(name: .customLong("max-connections-per-client"), help: "WebSocket connections one token's client id may hold open at once; 0 for no cap.")
    var maxConnectionsPerClient = 32

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (env TOCSIN_LOG_LEVEL).")
    var logLevel: String = Environment.get("TOCSIN_LOG_LEVEL") ?? "info"

    @OptionGroup var tls: ServerTLSOptions

    @OptionGroup var tracing: TracingOptions

    @Option(
        name: .customLong("config"),
        help: "A JSON file of live settings (the keys of `tocsin config set`: log.level, limits.*), applied over the flags and reloaded when it changes (env TOCSIN_CONFIG).")
    var settingsFile: String? = Environment.get("TOCSIN_CONFIG")

    mutating func validate() throws {
        for (flag, value) in [("--rate-publish", ratePublish), ("--rate-subscribe", rateSubscribe), ("--rate-connect", rateConnect)] {
            guard value.isFinite, (0...1e9).contains(value) else { throw ValidationError("\(flag) must be between 0 and 1e9, got \(value)") }
        }
        guard (0...1_000_000).contains(maxConnectionsPerClient) else {
            throw ValidationError("--max-connections-per-client must be between 0 and 1000000")
        }
        if let text = Environment.get("TOCSIN_PORT"), !CommandLine.arguments.contains("--port") {
            guard let value = Int(text), (0...65535).contains(value) else {
                throw ValidationError("TOCSIN_PORT must be a port number (0-65535), got '\(text)'")
            }
            port = value
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        for (flag, value) in [
            ("--head-timeout", headTimeout), ("--body-timeout", bodyTimeout), ("--first-message-timeout", firstMessageTimeout),
        ] {
            _ = try seconds(value, flag: flag, range: 0.1...3600)
        }
        _ = try seconds(keepalive, flag: "--keepalive", range: 1...3600)
        _ = try seconds(shutdownGrace, flag: "--shutdown-grace", range: 0...3600)
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be at least 1") }
        do {
            let bytes = try ByteCount.parse(maxOutboundBytesText)
            guard bytes >= 64 << 10, bytes <= 1 << 40 else {
                throw ValidationError("--max-outbound-bytes must be between 64KiB and 1TiB, got '\(maxOutboundBytesText)'")
            }
        } catch let error as TocsinError {
            throw ValidationError("--max-outbound-bytes: \(error.message)")
        }
        if let text = Environment.get("TOCSIN_MAX_SUBSCRIPTIONS_PER_CLIENT"), Int(text) == nil {
            throw ValidationError("TOCSIN_MAX_SUBSCRIPTIONS_PER_CLIENT must be a whole number, got '\(text)'")
        }
        guard (0...10_000_000).contains(fetchCacheEntries) else {
            throw ValidationError("--fetch-cache-entries must be from 0 (off) to 10000000, got \(fetchCacheEntries)")
        }
        guard maxSubscriptionsPerClient >= 0 else {
            throw ValidationError("--max-subscriptions-per-client must be 0 (no limit) or more, got \(maxSubscriptionsPerClient)")
        }
        if let storeLocation {
            do {
                _ = try PostgresLocation(parsing: storeLocation)
            } catch {
                throw ValidationError("--store (or TOCSIN_STORE): \(error.message)")
            }
        }
        if let maxStoreSize {
            let bytes: Int64
            do {
                bytes = try ByteCount.parse(maxStoreSize)
            } catch {
                throw ValidationError("--max-store-size (or TOCSIN_MAX_STORE_SIZE): \(error.message)")
            }
            // Below this a new store has no room for its own tables.
            guard bytes >= 1 << 20 else {
                throw ValidationError("--max-store-size (or TOCSIN_MAX_STORE_SIZE) must be at least 1MiB, got '\(maxStoreSize)'")
            }
        }
    }

    var configuration: BrokerConfiguration {
        var configuration = BrokerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.brokerID = brokerID
        configuration.seedExample = !empty
        // `validate` has checked the ranges.
        configuration.http.headTimeout = (try? seconds(headTimeout, flag: "", range: 0.1...3600)) ?? .seconds(10)
        configuration.http.bodyTimeout = (try? seconds(bodyTimeout, flag: "", range: 0.1...3600)) ?? .seconds(30)
        configuration.firstMessageTimeout = (try? seconds(firstMessageTimeout, flag: "", range: 0.1...3600)) ?? .seconds(10)
        configuration.keepalivePeriod = (try? seconds(keepalive, flag: "", range: 1...3600)) ?? .seconds(30)
        configuration.shutdownGrace = (try? seconds(shutdownGrace, flag: "", range: 0...3600)) ?? .seconds(10)
        configuration.maxOutboundBytes = maxOutboundBytes
        configuration.http.maxConnections = maxConnections
        configuration.maxSubscriptionsPerClient = maxSubscriptionsPerClient == 0 ? nil : maxSubscriptionsPerClient
        configuration.fetchCacheEntries = fetchCacheEntries
        configuration.allowedOrigins = auth.allowedOrigins
        configuration.limits.publishEvents = .init(perSecond: ratePublish, burst: max(ratePublish * 2, 10_000))
        configuration.limits.subscribes = .init(perSecond: rateSubscribe, burst: rateSubscribe * 10)
        configuration.limits.connections = .init(perSecond: rateConnect, burst: rateConnect * 5)
        configuration.limits.maxConnectionsPerClient = maxConnectionsPerClient
        return configuration
    }

    /// The store: PostgreSQL with `--store`, else the SQLite file in the data directory.
    /// `pollInterval`: how often to look for what other brokers sharing the SQLite file commit
    /// (nil: none do).
    func store(pollInterval: Duration? = nil) -> StoreConfiguration {
        // `validate` has checked the connection string.
        if let storeLocation, let location = try? PostgresLocation(parsing: storeLocation) {
            return .postgres(PostgresStore.Configuration(location: location, maxBytes: maxStoreBytes))
        }
        return .sqlite(
            SQLiteStore.Configuration(
                path: dataDirectory + "/tocsin.sqlite", synchronousFull: !noFsync, maxBytes: maxStoreBytes, pollInterval: pollInterval))
    }

    /// Builds and runs the broker until SIGINT/SIGTERM; prints one line on stdout when listening
    /// (scripts and tests read the port from it).
    func run(_ configuration: BrokerConfiguration, store: StoreConfiguration, role: String) async throws {
        var configuration = configuration
        let (logger, logLevelControl) = try bootstrapLogging(level: logLevel)
        configuration.logLevel = logLevelControl
        // `serve` keeps (and on first start makes) its key in the data directory; a network's
        // brokers are given the network's key file.
        let standalone = configuration.cluster == nil
        let keyFile = standalone ? dataDirectory + "/auth-keys.json" : nil
        let authority = try await auth.authority(defaultKeyFile: keyFile, port: port)
        if let authority {
            auth.reloadOnHangup(authority, defaultKeyFile: keyFile)
            configuration.authentication = .tokens(authority)
            configuration.cluster?.credential = MintedToken(
                authority: authority, client: "broker:" + configuration.brokerID, scopes: [.cluster], nowMillis: Token.nowMillis
            ).source
        }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["tocsin_event_loop_delay_seconds"] = [1, 5, 20, 50, 200, 1000, 5000].map { .milliseconds($0) }
        factory.durationHistogramBuckets["tocsin_store_commit_seconds"] =
            [500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 5_000_000].map { .microseconds($0) }
        MetricsSystem.bootstrap(factory)
        let tracing = try tracing.backend(service: "tocsin-broker", instance: configuration.brokerID, logger: logger)
        configuration.tracer = tracing?.tracer
        configuration.deliverySpansPerEvent = self.tracing.deliveriesPerEvent == 0 ? Int.max : self.tracing.deliveriesPerEvent
        let host = self.host
        let dataDirectory: String
        if case .postgres(let postgres) = store {
            dataDirectory = postgres.location.description
        } else {
            dataDirectory = self.dataDirectory
        }
        let tls = try await self.tls.load(logger: logger)
        configuration.tls = tls?.0
        let (http, ws) = tls == nil ? ("http", "ws") : ("https", "wss")
        var settings: SettingsFile?
        if let settingsFile { settings = try await SettingsFile(path: settingsFile, role: .broker, logger: logger) }
        let store = try await Self.open(store, logger: logger)
        let app = try await buildBroker(configuration: configuration, store: store, logger: logger, metrics: registry) { port in
            if standalone, let authority { try? await printAdminToken(authority) }
            print("tocsin\(role.isEmpty ? "" : " " + role) listening on \(http)://\(host):\(port) (WebSocket \(ws)://\(host):\(port)/v1/ws), data in \(dataDirectory)")
            fflushStdout()
        }
        // In force before the first request; then again each time the file changes.
        let broker = app.broker
        var settingsServices: [any Service] = []
        if let settings {
            let initial = settings.load(settings.provider.snapshot())
            settings.report(initial)
            broker.setFileSettings(initial.values)
            settingsServices = settings.services(initial: initial) { broker.setFileSettings($0) }
        }
        // The span exporter first: a group stops its services in reverse, so it flushes last.
        let services = (tracing.map { [$0.service] } ?? []) + [app.service] + (tls.map { [$0.1] } ?? []) + settingsServices
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

extension BrokerOptions {
    /// Opens the store; while its database cannot be reached (a broker started before
    /// PostgreSQL, or during its restart) tries again every few seconds, saying so, instead of
    /// exiting. Any other failure (a bad password, a schema from a newer Tocsin) ends the start.
    static func open(_ store: StoreConfiguration, logger: Logger) async throws -> any Store {
        var attempts = 0
        while true {
            do {
                return try await store.open(logger: logger)
            } catch let error as TocsinError where error.code == .storeUnavailable {
                attempts += 1
                if attempts == 1 || attempts % 12 == 0 {
                    logger.warning("waiting for the store's database", metadata: ["error": "\(error.message)", "attempts": "\(attempts)"])
                }
                try await Task.sleep(for: .seconds(min(attempts, 5)))
            }
        }
    }
}

/// A flag's value in seconds as a duration, refused with the flag named when outside `range`
/// (which also keeps NaN and huge values out of the conversion).
func seconds(_ value: Double, flag: String, range: ClosedRange<Double>) throws -> Duration {
    guard range.contains(value) else {
        throw ValidationError("\(flag) must be between \(range.lowerBound) and \(range.upperBound) seconds, got \(value)")
    }
    return .milliseconds(Int64((value * 1000).rounded()))
}

/// Logs to stderr at `text`'s level, which the `log.level` live setting and the `log-level`
/// command change through the returned control.
func bootstrapLogging(level text: String) throws -> (Logger, LogLevelControl) {
    guard let level = Logger.Level(rawValue: text) else {
        throw ValidationError("unknown log level '\(text)'")
    }
    let control = LogLevelControl(startup: level)
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .trace
        return LiveLevelLogHandler(inner: handler, control: control)
    }
    return (Logger(label: "tocsin"), control)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a standalone broker with its HTTP API and WebSocket endpoint on an embedded SQLite store (or PostgreSQL, with --store).")

    @OptionGroup var options: BrokerOptions

    func run() async throws {
        try await options.run(options.configuration, store: options.store(), role: "")
    }
}

/// `tocsin broker --controller URL`: a broker that joins a network.
struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run a broker that joins a network: registers with the controller, reports its load, follows its orders.",
        discussion: """
            Brokers of one host share the SQLite store in --data-dir and see each other's events within
            --poll-ms. Example: tocsin broker --controller http://127.0.0.1:7300 --broker-id b2 --port 7402
            """)

    @OptionGroup var options: BrokerOptions

    @Option(
        help: "The controller's HTTP URL; with several controllers, every one (comma-separated, or the flag repeated): the broker follows the leader (env TOCSIN_CONTROLLER, comma-separated).")
    var controller: [String] = []

    /// The controllers' URLs: the flags, else `TOCSIN_CONTROLLER`, else the local default.
    var controllerURLs: [String] {
        let given = controller.isEmpty ? [Environment.get("TOCSIN_CONTROLLER") ?? "http://127.0.0.1:7300"] : controller
        return given.flatMap { $0.split(separator: ",") }.map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty }
    }

    @Option(help: "The HTTP URL clients reach this broker at (env TOCSIN_ADVERTISE); required when --host is a wildcard address.")
    var advertise: String?

    @Option(help: "The region this broker serves clients of.")
    var region: String = Environment.get("TOCSIN_REGION") ?? "local"

    @Option(help: "The broker's latitude (with --lon), for sending clients to the nearest region.")
    var lat: Double?

    @Option(help: "The broker's longitude (with --lat).")
    var lon: Double?

    @Option(help: "Most client connections the controller sends here.")
    var capacity = 10_000

    @Option(name: .customLong("poll-ms"), help: "How often to look for events published through other brokers, in ms.")
    var pollMilliseconds = 2

    @Option(name: .customLong("drain-timeout"), help: "Seconds to wait for clients to migrate away on shutdown.")
    var drainTimeout = 15.0

    /// `--tls-ca`: the CAs an https:// controller is verified against.
    @OptionGroup var controllerTLS: ClientTLSOptions

    mutating func validate() throws {
        if advertise == nil { advertise = Environment.get("TOCSIN_ADVERTISE") }
        if advertise == nil, ListenAddress.isWildcard(options.host) {
            throw ValidationError("--host \(options.host) listens on every address: say which one clients use with --advertise http://HOST:PORT")
        }
        if let advertise, !(advertise.hasPrefix("http://") || advertise.hasPrefix("https://")) {
            throw ValidationError("--advertise must be an http:// or https:// URL, got '\(advertise)'")
        }
        guard !controllerURLs.isEmpty else { throw ValidationError("--controller needs at least one URL") }
        for url in controllerURLs where !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw ValidationError("--controller (or TOCSIN_CONTROLLER) takes http:// or https:// URLs, got '\(url)'")
        }
        guard (lat == nil) == (lon == nil) else { throw ValidationError("give both --lat and --lon, or neither") }
        guard capacity >= 1 else { throw ValidationError("--capacity must be at least 1") }
        guard (1...60_000).contains(pollMilliseconds) else { throw ValidationError("--poll-ms must be between 1 and 60000") }
        _ = try seconds(drainTimeout, flag: "--drain-timeout", range: 0...3600)
    }

    func run() async throws {
        var configuration = options.configuration
        var cluster = ClusterSettings(controllerURLs: controllerURLs)
        cluster.advertisedURL = advertise
        cluster.region = region
        if let lat, let lon {
            guard let point = GeoPoint.validated(lat: lat, lon: lon) else { throw ValidationError("--lat/--lon out of range") }
            cluster.location = point
        }
        cluster.capacity = capacity
        cluster.drainTimeout = try seconds(drainTimeout, flag: "--drain-timeout", range: 0...3600)
        cluster.controllerTrust = try controllerTLS.trust()
        configuration.cluster = cluster
        try await options.run(configuration, store: options.store(pollInterval: .milliseconds(pollMilliseconds)), role: "broker \(options.brokerID)")
    }
}
