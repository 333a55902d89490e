import Foundation
import Logging
import TocsinCore
import TocsinHTTPClient

/// `tocsin bench fetch`: notify-then-fetch subscribers sharing a few interests, run twice on
/// fresh brokers: with the result cache, and with it off (`--fetch-cache-entries 0`). Each
/// subscriber answers every notification with a `fetch` of what it has not fetched and acks it;
/// a publisher spreads events evenly over the interests. Reports the broker's CPU per fetch and
/// per event delivered through a fetch, and the cache's hit ratio from `/metrics`.
public struct FetchBenchmark: Sendable {
    public struct Configuration: Sendable {
        public var spawn: BenchTarget.Spawn
        public var subscribers: Int
        public var interests: Int
        /// Events published per second, in all.
        public var rate: Int
        public var duration: Duration
        public var warmup: Duration

        public init(spawn: BenchTarget.Spawn, subscribers: Int = 10_000, interests: Int = 100, rate: Int = 50, duration: Duration = .seconds(20), warmup: Duration = .seconds(3)) {
            (self.spawn, self.subscribers, self.interests, self.rate, self.duration, self.warmup) = (spawn, subscribers, interests, rate, duration, warmup)
        }
    }

    public struct Run: Sendable {
        public var cache: Bool
        public var published: Int
        public var fetchedEvents: Int
        public var fetches: Int
        public var hits: Int
        public var misses: Int
        public var cpuSeconds: Double
        public var wallSeconds: Double
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    public func run(progress: @escaping @Sendable (String) -> Void) async throws -> String {
        var runs: [Run] = []
        for cache in [true, false] {
            runs.append(try await measure(cache: cache, progress: progress))
        }
        var out = "\(configuration.subscribers) notify subscribers sharing \(configuration.interests) interests, \(configuration.rate) events/s for \(configuration.duration) (after \(configuration.warmup) warm-up), one broker\n"
        out += "| fetch cache | events published | fetches | events fetched | hit ratio | broker CPU | CPU per fetch | CPU per event fetched |\n|---|---|---|---|---|---|---|---|\n"
        for r in runs {
            let lookups = r.hits + r.misses
            out += String(
                format: "| %@ | %d | %d | %d | %@ | %.2f s (%.0f%% of a core) | %.1f µs | %.1f µs |\n", r.cache ? "on" : "off", r.published, r.fetches, r.fetchedEvents,
                r.cache ? String(format: "%.1f%%", lookups > 0 ? Double(r.hits) / Double(lookups) * 100 : 0) : "—", r.cpuSeconds,
                r.cpuSeconds / r.wallSeconds * 100, r.fetches > 0 ? r.cpuSeconds / Double(r.fetches) * 1e6 : 0,
                r.fetchedEvents > 0 ? r.cpuSeconds / Double(r.fetchedEvents) * 1e6 : 0)
        }
        return out
    }

    private func measure(cache: Bool, progress: @escaping @Sendable (String) -> Void) async throws -> Run {
        var spawn = configuration.spawn
        spawn.extraArguments += ["--fetch-cache-entries", cache ? "10000" : "0"]
        let configuration = self.configuration
        return try await MeasuredBrokers.with(.spawn(spawn), progress: progress) { brokers in
            guard let endpoint = brokers.endpoints.first, let figures = brokers.figures else { throw BenchError("no broker was spawned") }
            let base = "http://\(endpoint.host):\(endpoint.port)"
            _ = try await HTTPCall.call(.PUT, base + "/v1/streams/fetchbench", body: ["fields": [["name": "k", "type": "string"], ["name": "n", "type": "int"]]])
            _ = try await HTTPCall.call(
                .PUT, base + "/v1/channels/FetchByKey",
                body: ["stream": "fetchbench", "params": [["name": "k", "type": "string"]], "where": "k == $k", "delivery": "notify"])
            let samples = LatencySamples()
            let interests = configuration.interests
            let subscribers = try await RawSubscribers.connect(
                host: endpoint.host, port: endpoint.port, count: configuration.subscribers, client: { "fetcher-\($0)" },
                subscribe: { #"{"type":"subscribe","id":"s","channel":"FetchByKey","params":{"k":"k\#($0 % interests)"}}"# }, fetch: true,
                ackEvery: 1, samples: samples)
            defer { Task { try? await subscribers.close() } }
            let deadline = ContinuousClock.now + .seconds(120)
            while samples.subscribed.load(ordering: .relaxed) < configuration.subscribers {
                guard ContinuousClock.now < deadline else { throw BenchError("only \(samples.subscribed.load(ordering: .relaxed)) subscribers subscribed in 120 s") }
                try await Task.sleep(for: .milliseconds(50))  // polling the count the connections raise
            }
            progress("\(configuration.subscribers) subscribers subscribed (fetch cache \(cache ? "on" : "off"))")
            var published = 0
            let interval = Duration.seconds(1) / configuration.rate
            func publish(for span: Duration) async throws {
                let end = ContinuousClock.now + span
                var next = ContinuousClock.now
                while next < end {
                    published += 1
                    _ = try await HTTPCall.call(
                        .POST, base + "/v1/streams/fetchbench/events", body: ["k": .string("k\(published % interests)"), "n": .int(Int64(published))])
                    next += interval
                    try await Task.sleep(until: next)
                }
            }
            try await publish(for: configuration.warmup)
            let before = try await Self.cacheCounters(base)
            let fetchedBefore = samples.delivered.load(ordering: .relaxed)
            let publishedBefore = published
            let cpuBefore = figures.cpuSeconds
            let start = ContinuousClock.now
            try await publish(for: configuration.duration)
            let wall = ContinuousClock.now - start
            let cpu = ProcessGroupFigures(pids: brokers.processes.map(\.pid)).cpuSeconds - cpuBefore
            let after = try await Self.cacheCounters(base)
            let fetched = samples.delivered.load(ordering: .relaxed) - fetchedBefore
            let hits = after.hits - before.hits, misses = after.misses - before.misses
            let fetches = cache ? hits + misses : fetched  // without the cache, a fetch per delivered event (one event per notification)
            return Run(
                cache: cache, published: published - publishedBefore, fetchedEvents: fetched, fetches: fetches, hits: hits, misses: misses,
                cpuSeconds: cpu, wallSeconds: Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18)
        }
    }

    /// `tocsin_fetch_cache_hits_total` and `_misses_total` from the broker's `/metrics`.
    private static func cacheCounters(_ base: String) async throws -> (hits: Int, misses: Int) {
        let text = try await HTTPCall.text(base + "/metrics")
        func value(_ name: String) -> Int {
            for line in text.split(separator: "\n") where line.hasPrefix(name + " ") || line.hasPrefix(name + "{") {
                return Int(Double(line.split(separator: " ").last ?? "") ?? 0)
            }
            return 0
        }
        return (value("tocsin_fetch_cache_hits_total"), value("tocsin_fetch_cache_misses_total"))
    }
}
