// swift-tools-version:6.2
// libFuzzer targets for Tocsin (docs/security.md). A package of its own so that the
// sanitizer flags never touch the main build; `./run` builds and runs them.
import PackageDescription

let package = Package(
    name: "tocsin-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "tocsin", path: ".."),
        // The HTTP target's own imports (all already in the root package's graph).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // Declares libFuzzer's LLVMFuzzerRunDriver for the targets' main.swift.
        .target(name: "FuzzerDriver"),
        // The WebSocket frame decoders: ClientMessage (broker side) and ServerMessage (client library).
        .executableTarget(name: "FuzzWire", dependencies: ["FuzzerDriver", .product(name: "TocsinCore", package: "tocsin")]),
        // JSONValue.parse, and re-serialising what it accepts.
        .executableTarget(name: "FuzzJSON", dependencies: ["FuzzerDriver", .product(name: "TocsinCore", package: "tocsin")]),
        // A stream definition and events validated against it.
        .executableTarget(name: "FuzzSchema", dependencies: ["FuzzerDriver", .product(name: "TocsinCore", package: "tocsin")]),
        // Channel definitions and where clauses: lexer, parser, type checker, compiler, evaluation.
        .executableTarget(name: "FuzzChannel", dependencies: ["FuzzerDriver", .product(name: "TocsinCore", package: "tocsin")]),
        // The broker's HTTP routes (BrokerHTTPResponder) on an SQLite store: builds NIO, Hummingbird,
        // GRDB and PostgresNIO under the sanitizers too, so it takes longest to build.
        .executableTarget(
            name: "FuzzHTTP",
            dependencies: [
                "FuzzerDriver",
                .product(name: "TocsinCore", package: "tocsin"),
                .product(name: "TocsinBroker", package: "tocsin"),
                .product(name: "TocsinStore", package: "tocsin"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)
