import Benchmark
import MatcherFixtures
import TocsinCore

// Matching cost per event (one event per measured iteration), with ~100 matching interests
// per event. Run: swift package --package-path Benchmarks benchmark
// (see Fixtures.swift for how the data and its density are chosen).

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 1000,
        maxDuration: .seconds(3),
        maxIterations: 300_000
    )

    for n in [10_000, 100_000, 1_000_000] {
        Benchmark(
            "EmergenciesNearMe match, \(n.formatted) geo interests",
            configuration: .init(setup: { Fixtures.prepare(.geo, n) })
        ) { benchmark in
            let fixture = Fixtures.get(.geo, n)
            var result: [InterestID] = []
            result.reserveCapacity(1024)
            for _ in benchmark.scaledIterations {
                fixture.matchNext(into: &result)
            }
        }
    }

    Benchmark(
        "RegionAlerts (equality) match, 1M interests",
        configuration: .init(setup: { Fixtures.prepare(.equality, 1_000_000) })
    ) { benchmark in
        let fixture = Fixtures.get(.equality, 1_000_000)
        var result: [InterestID] = []
        result.reserveCapacity(1024)
        for _ in benchmark.scaledIterations {
            fixture.matchNext(into: &result)
        }
    }

    Benchmark(
        "EmergenciesNearMe acquire+release, 1M geo interests",
        configuration: .init(setup: { Fixtures.prepare(.geo, 1_000_000) })
    ) { benchmark in
        let fixture = Fixtures.get(.geo, 1_000_000)
        for _ in benchmark.scaledIterations {
            fixture.churnOnce()
        }
    }
}

extension Int {
    var formatted: String { self >= 1_000_000 ? "\(self / 1_000_000)M" : "\(self / 1000)k" }
}
