import ArgumentParser
import Foundation
import Logging
import TocsinBroker
import TocsinDev
import TocsinLoad
import TocsinStore

/// `tocsin bench`: measures a broker from the outside, as clients see it (the benchmarks are
/// `TocsinLoad`'s; this reads the flags, runs one and prints its report).
///
/// - `latency`: N WebSocket subscribers of one channel, a publisher at a fixed rate; prints
///   delivered/expected, publish→notify latency percentiles, and the server's CPU time per
///   delivered notification (from /proc, when the server is spawned here).
/// - `throughput`: P publishers, each publishing one event at a time and waiting for its
///   durable `published` reply; prints events/s and publish latency.
///
/// With `--spawn`, `--postgres` (a durable throwaway PostgreSQL) or `--store URL` runs the
/// spawned brokers (`--brokers N`) on PostgreSQL, and `--namespaces` puts each in a network
/// namespace of its own: brokers on different hosts as far as the network goes.
/// - `network`: a local network of processes, subscribers of the client library, failover and
///   rebalance events (see `NetworkBenchmark`).
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark a broker: delivery latency and CPU per delivery, or durable publish throughput.")

    enum Mode: String, ExpressibleByArgument { case latency, throughput, network, tokens, enrich, bound, fetch, connections, controller }

    @Argument(help: "latency, throughput, network, tokens (what checking a token costs, in this process), enrich (what an enrich clause costs per notification, in this process), bound (location updates per second with 10^6 subscriptions bound to userLocations, in this process), fetch (notify subscribers sharing interests, with the fetch result cache on and off; --subscribers, --interests, --rate), connections (--connections idle subscribed clients on one broker, its memory per client, and the latency of --subscribers sample clients receiving --rate events/s among them), or controller (the controller's decisions with 10, 100 and 1,000 brokers in 10 regions and --clients clients, in this process; with --spawn, a real controller under --brokers simulated brokers heartbeating once a second and --rate assignments/s, on PostgreSQL with --postgres).")
    var mode: Mode = .latency

    @Option(help: "The broker's HTTP URL; ignored with --spawn.")
    var url: String = "http://127.0.0.1:7400"

    @Flag(help: "Start a fresh `tocsin serve` (this binary) on a free port in a temporary directory, and measure its CPU.")
    var spawn = false

    @Flag(name: .customLong("no-fsync"), help: "With --spawn: run the server with --no-fsync.")
    var noFsync = false

    @Flag(
        help:
            "With --spawn (latency, throughput): start a durable throwaway PostgreSQL (fsync and synchronous_commit on) for the run and spawn the brokers on it (--store).")
    var postgres = false

    @Option(help: "With --spawn (latency, throughput): spawn the brokers on this existing PostgreSQL database (a --store connection string).")
    var store: String?

    @Flag(
        help:
            "With --spawn --postgres (root only): each broker in a network namespace of its own, linked to a bridge by a veth pair; PostgreSQL and the load generator stay in this namespace and reach the brokers over the bridge.")
    var namespaces = false

    @Option(help: "Subscribers (latency mode).")
    var subscribers = 100

    @Option(help: "Events per second (latency and fetch modes).")
    var rate = 500

    @Option(help: "Distinct interests the subscribers share (fetch mode).")
    var interests = 100

    @Option(
        name: .customLong("non-readers"),
        help: "Latency mode: this many more subscribers of the same events that never read their socket (slow consumers).")
    var nonReaders = 0

    @Option(help: "Publishers (throughput mode).")
    var publishers = 1

    @Option(name: .customLong("in-flight"), help: "Publishes each publisher keeps unanswered on its connection (throughput mode).")
    var inFlight = 1

    @Option(help: "Throughput mode: events per publish (`events: [...]`), 1-1000; the figures count events.")
    var batch = 1

    @Flag(help: "Throughput mode: give every publish a key (idempotent publishing), so each also checks and records it.")
    var keys = false

    @Option(
        help:
            "Brokers. Network mode: the network's (default 3). Latency and throughput with --spawn on PostgreSQL: how many `tocsin serve` share the store (default 1); throughput spreads its publishers over them round-robin, latency subscribes on the first and publishes on the last.")
    var brokers: Int?

    @Option(name: .customLong("kill-broker-at"), help: "Network mode: SIGKILL the broker with the most clients this many seconds into publishing.")
    var killBrokerAt: Double?

    @Option(name: .customLong("add-broker-at"), help: "Network mode: start one more broker this many seconds into publishing.")
    var addBrokerAt: Double?

    @Option(help: "Connections mode: idle clients, each subscribed (durably) to a kind nothing is published to.")
    var connections = 100_000

    @Option(help: "Controller mode: clients spread over the brokers.")
    var clients = 10_000_000

    @Option(name: .customLong("idle-stage"), help: "Connections mode: how far each idle client goes: upgrade, hello or subscribe (the default).")
    var idleStage: String = "subscribe"

    @Option(help: "Seconds measured, after the warm-up.")
    var duration = 10.0

    @Option(help: "Seconds of warm-up, not measured.")
    var warmup = 2.0

    @Option(
        name: .customLong("server-arg"), parsing: .unconditionalSingleValue,
        help: "With --spawn (latency, throughput): one more option for every spawned broker, repeatable (--server-arg=--otlp-endpoint=http://127.0.0.1:4318).")
    var serverArguments: [String] = []

    /// What `--spawn` starts.
    var spawnPlan: BenchTarget.Spawn {
        let storeChoice: BenchTarget.Spawn.Store = postgres ? .throwawayPostgres : store.map { .postgres($0) } ?? .sqlite
        var plan = BenchTarget.Spawn(
            executable: ChildProcess.currentExecutable, noFsync: noFsync, brokers: brokers ?? 1, store: storeChoice, namespaces: namespaces)
        plan.extraArguments += serverArguments
        return plan
    }

    func validate() throws {
        if postgres || store != nil || namespaces {
            let flag = postgres ? "--postgres" : store != nil ? "--store" : "--namespaces"
            guard mode != .network else { throw ValidationError("\(flag) is for the latency and throughput modes") }
            guard spawn else { throw ValidationError("\(flag) needs --spawn (it says where the spawned brokers run)") }
        }
        if postgres, store != nil { throw ValidationError("--postgres starts a throwaway PostgreSQL; --store names an existing one: give one of them") }
        if let store {
            do {
                _ = try PostgresLocation(parsing: store)
            } catch {
                throw ValidationError("--store: \(error.message)")
            }
        }
        // Numbers the benchmarks loop and divide by: a negative duration ended in a crash.
        guard duration.isFinite, (0.1...86_400).contains(duration) else { throw ValidationError("--duration must be between 0.1 and 86400 seconds, got \(duration)") }
        guard warmup.isFinite, (0...3_600).contains(warmup) else { throw ValidationError("--warmup must be between 0 and 3600 seconds, got \(warmup)") }
        guard (1...1_000).contains(batch) else { throw ValidationError("--batch must be between 1 and 1000, got \(batch)") }
        guard (1...1_000_000).contains(rate) else { throw ValidationError("--rate must be between 1 and 1000000, got \(rate)") }
        guard ConnectionsBenchmark.Stage(rawValue: idleStage) != nil else {
            throw ValidationError("--idle-stage must be upgrade, hello or subscribe, got '\(idleStage)'")
        }
        guard (1_000...1_000_000_000).contains(clients) else { throw ValidationError("--clients must be between 1000 and 1000000000, got \(clients)") }
        guard (1...1_000_000).contains(connections) else { throw ValidationError("--connections must be between 1 and 1000000, got \(connections)") }
        if mode == .controller {
            // --spawn: a real controller and --brokers simulated brokers (--postgres: on a throwaway PostgreSQL).
            if let brokers, !(1...100_000).contains(brokers) { throw ValidationError("--brokers must be in 1...100000, got \(brokers)") }
            if store != nil || namespaces { throw ValidationError("controller mode takes --postgres, not --store or --namespaces") }
            return
        }
        if mode == .network {
            if let brokers, !(1...64).contains(brokers) { throw ValidationError("--brokers must be in 1...64, got \(brokers)") }
        } else if spawn, let problem = spawnPlan.problem {
            throw ValidationError(problem.hasPrefix("the number of brokers") ? "--brokers: \(problem)" : problem)
        } else if !spawn, brokers != nil {
            throw ValidationError("--brokers counts brokers this bench spawns: use it with --spawn (or in network mode)")
        }
        guard spawn || mode == .network || (url.hasPrefix("http://") && URLComponents(string: url)?.host != nil) else {
            throw ValidationError("--url must be the broker's plain http:// URL (the bench does not speak TLS), not \(url)")
        }
    }

    func run() async throws {
        var logger = Logger(label: "tocsin.bench")
        logger.logLevel = .critical
        let progress: @Sendable (String) -> Void = { print($0) }
        let target: BenchTarget = spawn ? .spawn(spawnPlan) : .url(url)
        switch mode {
        case .latency:
            let configuration = LatencyBenchmark.Configuration(
                target: target, subscribers: subscribers, rate: rate, nonReaders: nonReaders, duration: duration, warmup: warmup)
            print(try await LatencyBenchmark(configuration: configuration).run(logger: logger, progress: progress))
        case .throughput:
            let configuration = ThroughputBenchmark.Configuration(
                target: target, publishers: publishers, inFlight: inFlight, keys: keys, batch: batch, duration: duration, warmup: warmup)
            print(try await ThroughputBenchmark(configuration: configuration).run(logger: logger, progress: progress))
        case .network:
            let configuration = NetworkBenchmark.Configuration(
                executable: ChildProcess.currentExecutable, brokers: brokers ?? 3, subscribers: subscribers, rate: rate, duration: duration,
                killAt: killBrokerAt, addAt: addBrokerAt, noFsync: noFsync)
            print(try await NetworkBenchmark(configuration: configuration).run(logger: logger, progress: progress))
        case .tokens:
            try await TokenBenchmark.run()
        case .enrich:
            try EnrichBenchmark.run()
        case .bound:
            print(try BoundParameterBenchmark.run())
            if let memory = ProcessFigures(pid: getpid()).residentMemory {
                print("peak resident memory of this process (table, 10^6 subscriptions, prepared updates): \(memory.peak / 1024) MiB")
            }
        case .fetch:
            let configuration = FetchBenchmark.Configuration(
                spawn: spawnPlan, subscribers: subscribers, interests: interests, rate: rate, duration: .seconds(duration),
                warmup: .seconds(warmup))
            print(try await FetchBenchmark(configuration: configuration).run(progress: progress))
        case .connections:
            let configuration = ConnectionsBenchmark.Configuration(
                target: target, connections: connections, sample: subscribers, rate: rate, duration: duration,
                stage: ConnectionsBenchmark.Stage(rawValue: idleStage) ?? .subscribe)
            print(try await ConnectionsBenchmark(configuration: configuration).run(logger: logger, progress: progress))
        case .controller where spawn:
            let configuration = ControllerLoadBenchmark.Configuration(
                executable: ChildProcess.currentExecutable, brokers: brokers ?? 1000, duration: duration, assignsPerSecond: rate, postgres: postgres)
            print(try await ControllerLoadBenchmark(configuration: configuration).run(progress: progress))
        case .controller:
            print(ControllerScaleBenchmark.table(try ControllerScaleBenchmark.run(clients: clients)))
        }
    }
}
