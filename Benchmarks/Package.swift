// swift-tools-version:6.2
// Benchmarks for Tocsin, kept out of the root package so its users never build ordo-one/benchmark.
// Run from the repository root:
//   swift package --package-path Benchmarks benchmark
import PackageDescription

let package = Package(
    name: "TocsinBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "tocsin", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Data sets and hand-built channels shared by the benchmark and the probe.
        .target(
            name: "MatcherFixtures",
            dependencies: [.product(name: "TocsinCore", package: "tocsin")],
            path: "Support/MatcherFixtures"
        ),
        // ordo-one/benchmark suites: every executable target directly under a folder named
        // "Benchmarks" is one (the plugin finds them by that path).
        .executableTarget(
            name: "MatcherBenchmarks",
            dependencies: [
                "MatcherFixtures",
                .product(name: "TocsinCore", package: "tocsin"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "MatcherBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // A plain timing loop, for profiling (perf record) without the benchmark harness.
        .executableTarget(
            name: "MatcherProbe",
            dependencies: ["MatcherFixtures", .product(name: "TocsinCore", package: "tocsin")],
            path: "Tools/MatcherProbe"
        ),
        // The controller's decisions (assign, rebalance plan), timed per call.
        .executableTarget(
            name: "ClusterProbe",
            dependencies: [.product(name: "TocsinCore", package: "tocsin"), .product(name: "TocsinLoad", package: "tocsin")],
            path: "Tools/ClusterProbe"
        ),
    ]
)
