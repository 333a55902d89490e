// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "tocsin",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tocsin", targets: ["tocsin"]),
        .library(name: "TocsinCore", targets: ["TocsinCore"]),
        .library(name: "TocsinClient", targets: ["TocsinClient"]),
        .library(name: "TocsinLoad", targets: ["TocsinLoad"]),
        // For the HTTP fuzz target (Fuzz/), which drives a broker's routes on an SQLite store.
        .library(name: "TocsinBroker", targets: ["TocsinBroker"]),
        .library(name: "TocsinStore", targets: ["TocsinStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", from: "1.6.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // HTTP/1 ↔ Swift HTTP Types on a connection the broker upgrades itself (already in the graph: Hummingbird).
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        // Spans (the API; Hummingbird already brings it) and, in the executable only, their OTLP/HTTP
        // export. Without gRPC: that trait would add several minutes to every cold build.
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        // The settings file (`--config`): JSON, reloaded when it changes. Already in the graph (async-http-client).
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: ["JSON", "Reloading"]),
    ],
    targets: [
        // Pure: model, schema, channel language, matcher and indexes, wire messages. No NIO, no database.
        .target(name: "TocsinCore"),
        .target(
            name: "TocsinStore",
            dependencies: [
                "TocsinCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The HTTP edge shared by the broker and the controller: error bodies and statuses, JSON bodies, queries.
        .target(
            name: "TocsinHTTP",
            dependencies: [
                "TocsinCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // TLS on every listener, its certificate reloaded on SIGHUP.
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            // docs/openapi.yaml, served at /v1/openapi.yaml.
            resources: [.embedInCode("Assets/openapi.yaml")]
        ),
        .target(
            name: "TocsinController",
            dependencies: [
                "TocsinCore",
                "TocsinHTTP",
                // The `ControllerLedger` protocol only (the executable opens the PostgreSQL one).
                "TocsinStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The dashboard, the demo page and the browser client, served from the binary.
            resources: [
                .embedInCode("Assets/dashboard.html"), .embedInCode("Assets/dashboard.js"), .embedInCode("Assets/dashboard.css"),
                .embedInCode("Assets/demo.html"), .embedInCode("Assets/demo.js"), .embedInCode("Assets/tocsin.js"),
            ]
        ),
        // Tokens: the key file, JWT verification and minting (jwt-kit). The broker and the controller
        // see only the core's `TokenVerifier`; the executable and the tests make the JWT one.
        .target(
            name: "TocsinAuth",
            dependencies: ["TocsinCore", .product(name: "JWTKit", package: "jwt-kit")]
        ),
        // Local networks of real processes: `tocsin dev`, the benchmarks and the integration tests share it.
        .target(name: "TocsinDev", dependencies: ["TocsinCore"]),
        .target(
            name: "TocsinBroker",
            dependencies: [
                "TocsinCore",
                "TocsinStore",
                "TocsinHTTP",
                "TocsinHTTPClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // JSON over HTTP to Tocsin nodes, and the controller's API as typed calls (brokers, clients and the CLI).
        .target(
            name: "TocsinHTTPClient",
            dependencies: [
                "TocsinCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // Which CAs https:// and wss:// peers are verified against (`TLSTrust`).
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "TocsinClient",
            dependencies: [
                "TocsinCore",
                "TocsinHTTPClient",
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Load generation and benchmarks: configurations in, reports out. `tocsin bench`, the
        // integration tests and Benchmarks/ share it (raw WebSocket load client, /proc figures,
        // subscriber audiences, publish feeds, percentiles).
        .target(
            name: "TocsinLoad",
            dependencies: [
                "TocsinCore",
                "TocsinClient",
                "TocsinDev",
                "TocsinHTTPClient",
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tocsin",
            dependencies: [
                "TocsinCore",
                "TocsinStore",
                "TocsinHTTP",
                "TocsinBroker",
                "TocsinController",
                "TocsinClient",
                "TocsinDev",
                "TocsinLoad",
                "TocsinAuth",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),

                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Configuration", package: "swift-configuration"),
            ]
        ),
        // Test support shared by the test targets: an in-process broker on port 0, an inbox with deadlines.
        .target(
            name: "TocsinTesting",
            dependencies: [
                "TocsinCore",
                "TocsinAuth",
                "TocsinStore",
                "TocsinBroker",
                "TocsinController",
                "TocsinClient",
                "TocsinDev",
                "TocsinLoad",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // The OTLP receiver that collects spans (`OTLPReceiver`).
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "TocsinCoreTests",
            dependencies: [
                "TocsinCore",
                "TocsinAuth",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(
            name: "TocsinControllerTests",
            dependencies: [
                "TocsinTesting",
                "TocsinAuth",
                "TocsinController",
                "TocsinCore",
                "TocsinClient",
            ]
        ),
        .testTarget(name: "TocsinLoadTests", dependencies: ["TocsinLoad"]),
        .testTarget(
            name: "TocsinStoreTests",
            dependencies: [
                "TocsinStore", "TocsinCore", "TocsinTesting", "TocsinDev", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .testTarget(
            name: "TocsinBrokerTests",
            dependencies: [
                "TocsinTesting",
                "TocsinDev",
                "TocsinAuth",
                "TocsinBroker",
                "TocsinHTTP",
                "TocsinController",
                "TocsinStore",
                "TocsinCore",
                "TocsinClient",
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        // The client library: its state machine driven directly, and the library against in-process brokers.
        .testTarget(
            name: "TocsinClientTests",
            dependencies: [
                "TocsinClient",
                "TocsinCore",
                "TocsinStore",
                "TocsinTesting",
                "TocsinBroker",
                "TocsinController",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "tocsin",
                "TocsinStore",
                "TocsinDev",
                "TocsinTesting",
                "TocsinCore",
                "TocsinClient",
                "TocsinLoad",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
    ]
)
