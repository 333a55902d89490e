import ArgumentParser
import Foundation
import Logging
import TocsinDev
import TocsinLoad

/// `tocsin bench`: measures a broker from the outside, as clients see it (the benchmarks are
/// `TocsinLoad`'s; this reads the flags, runs one and prints its report).
///
/// - `latency`: N WebSocket subscribers of one channel, a publisher at a fixed rate; prints
///   delivered/expected, publish→notify latency percentiles, and the server's CPU time per
///   delivered notification (from /proc, when the server is spawned here).
/// - `throughput`: P publishers, each publishing one event at a time and waiting for its
///   durable `published` reply; prints events/s and publish latency.
/// - `network`: a local network of processes, subscribers of the client library, failover and
///   rebalance events (see `NetworkBenchmark`).
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark a broker: delivery latency and CPU per delivery, or durable publish throughput.")

    enum Mode: String, ExpressibleByArgument { case latency, throughput, network }

    @Argument(help: "latency, throughput or network.")
    var mode: Mode = .latency

    @Option(help: "The broker's HTTP URL; ignored with --spawn.")
    var url: String = "http://127.0.0.1:7400"

    @Flag(help: "Start a fresh `tocsin serve` (this binary) on a free port in a temporary directory, and measure its CPU.")
    var spawn = false

    @Flag(name: .customLong("no-fsync"), help: "With --spawn: run the server with --no-fsync.")
    var noFsync = false

    @Option(help: "Subscribers (latency mode).")
    var subscribers = 100

    @Option(help: "Events per second (latency mode).")
    var rate = 500

    @Option(
        name: .customLong("non-readers"),
        help: "Latency mode: this many more subscribers of the same events that never read their socket (slow consumers).")
    var nonReaders = 0

    @Option(help: "Publishers (throughput mode).")
    var publishers = 1

    @Option(name: .customLong("in-flight"), help: "Publishes each publisher keeps unanswered on its connection (throughput mode).")
    var inFlight = 1

    @Flag(help: "Throughput mode: give every publish a key (idempotent publishing), so each also checks and records it.")
    var keys = false

    @Option(help: "Brokers (network mode).")
    var brokers = 3

    @Option(name: .customLong("kill-broker-at"), help: "Network mode: SIGKILL the broker with the most clients this many seconds into publishing.")
    var killBrokerAt: Double?

    @Option(name: .customLong("add-broker-at"), help: "Network mode: start one more broker this many seconds into publishing.")
    var addBrokerAt: Double?

    @Option(help: "Seconds measured, after the warm-up.")
    var duration = 10.0

    @Option(help: "Seconds of warm-up, not measured.")
    var warmup = 2.0

    func validate() throws {
        guard spawn || mode == .network || (url.hasPrefix("http://") && URLComponents(string: url)?.host != nil) else {
            throw ValidationError("--url must be the broker's plain http:// URL (the bench does not speak TLS), not \(url)")
        }
    }

    func run() async throws {
        var logger = Logger(label: "tocsin.bench")
        logger.logLevel = .critical
        let progress: @Sendable (String) -> Void = { print($0) }
        let target: BenchTarget = spawn ? .spawn(executable: ChildProcess.currentExecutable, noFsync: noFsync) : .url(url)
        switch mode {
        case .latency:
            let configuration = LatencyBenchmark.Configuration(
                target: target, subscribers: subscribers, rate: rate, nonReaders: nonReaders, duration: duration, warmup: warmup)
            print(try await LatencyBenchmark(configuration: configuration).run(logger: logger, progress: progress))
        case .throughput:
            let configuration = ThroughputBenchmark.Configuration(
                target: target, publishers: publishers, inFlight: inFlight, keys: keys, duration: duration, warmup: warmup)
            print(try await ThroughputBenchmark(configuration: configuration).run(logger: logger, progress: progress))
        case .network:
            let configuration = NetworkBenchmark.Configuration(
                executable: ChildProcess.currentExecutable, brokers: brokers, subscribers: subscribers, rate: rate, duration: duration,
                killAt: killBrokerAt, addAt: addBrokerAt, noFsync: noFsync)
            print(try await NetworkBenchmark(configuration: configuration).run(logger: logger, progress: progress))
        }
    }
}
