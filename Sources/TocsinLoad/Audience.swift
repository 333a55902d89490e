import Logging
import Synchronization
import TocsinClient
import TocsinCore

/// Subscribers of the client library, each to `EmergenciesOfKind(kind)` on a network found from
/// `seeds`, with what each one saw (a `Probe`). The network benchmark and the network tests
/// watch delivery, order, placement, failover and migrations through it.
public final class Audience: Sendable {
    public struct Configuration: Sendable {
        public var count: Int
        public var seeds: [String]
        public var kind: String
        /// How often each subscriber acknowledges (acks are cumulative); nil: the library's default.
        public var ackInterval: Duration?
        /// The first reconnect delay; nil: the library's default.
        public var initialBackoff: Duration?
        /// How often each subscriber pings its broker; nil: the library's default.
        public var pingInterval: Duration?
        /// What the subscribers' client ids start with (then "-0", "-1", …); nil: the kind.
        /// Two audiences of one kind need different ones.
        public var clientPrefix: String?
        /// Each subscriber's token, by its client id, when the network requires tokens.
        public var token: (@Sendable (_ client: String) -> TokenSource)?

        public init(count: Int, seeds: [String], kind: String) {
            self.count = count
            self.seeds = seeds
            self.kind = kind
        }
    }

    /// What one subscriber saw.
    public final class Probe: Sendable {
        public struct State: Sendable {
            /// The seqs of every event received, in arrival order.
            public var seqs: [Int64] = []
            /// Events whose seq was not above the one before.
            public var outOfOrder = 0
            /// Times the library said it could not resume without a gap (retention passed its position).
            public var notRecovered = 0
            /// Connections lost (not moves by `migrate`), and requests the network refused (`failed`).
            public var disconnects = 0
            public var failures = 0
            /// Publish→notify latencies (ns) of events that carry their publish time ("t<nanos>").
            public var latencies: [Int64] = []
            /// The broker it is (or was last) connected to.
            public var broker = ""
            public var connections = 0
            /// Monotonic nanos of the first disconnect from the crashed broker, and of the reconnect after it.
            public var lostAt: Int64?
            public var recoveredAt: Int64?
            /// Each migration followed, "from→to", and its reason.
            public var moves: [String] = []
            public var migrationReasons: [String] = []
        }

        public let state = Mutex(State())

        /// What it saw so far.
        public var snapshot: State { state.withLock { $0 } }
    }

    public let configuration: Configuration
    public let probes: [Probe]
    public let subscribers: [Subscriber]
    private let crashed = Mutex<(broker: String, at: Int64)?>(nil)

    public var kind: String { configuration.kind }

    /// The subscribers, not yet connected: `run()` connects them.
    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        subscribers = (0..<configuration.count).map { i in
            var subscriberConfiguration = Subscriber.Configuration(seeds: configuration.seeds, client: "\(configuration.clientPrefix ?? configuration.kind)-\(i)")
            if let ackInterval = configuration.ackInterval { subscriberConfiguration.ackInterval = ackInterval }
            if let initialBackoff = configuration.initialBackoff { subscriberConfiguration.initialBackoff = initialBackoff }
            if let pingInterval = configuration.pingInterval { subscriberConfiguration.pingInterval = pingInterval }
            if let token = configuration.token { subscriberConfiguration.token = token(subscriberConfiguration.client) }
            return Subscriber(
                configuration: subscriberConfiguration,
                requests: [SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": .string(configuration.kind)])],
                logger: logger)
        }
        probes = subscribers.map { _ in Probe() }
    }

    /// Runs every subscriber, recording what each sees in its probe, until the task is
    /// cancelled (`async let _ = audience.run()` for the length of a scope).
    public func run() async {
        await withDiscardingTaskGroup { group in
            for (subscriber, probe) in zip(subscribers, probes) {
                group.addTask {
                    for await event in subscriber.events() {
                        Self.observe(event, probe: probe, crashed: self.crash)
                    }
                }
            }
        }
    }

    /// Notes that `broker` was crashed now: its subscribers' disconnects and reconnects after
    /// this time the failover.
    public func noteCrash(of broker: String, at nanos: Int64 = Monotonic.nanos()) {
        crashed.withLock { $0 = (broker, nanos) }
    }

    /// The crash noted, if any.
    public var crash: (broker: String, at: Int64)? { crashed.withLock { $0 } }

    static func observe(_ event: Subscriber.Event, probe: Probe, crashed: (broker: String, at: Int64)?) {
        switch event {
        case .notification(let n):
            let now = Monotonic.nanos()
            probe.state.withLock { s in
                for e in n.events {
                    if let last = s.seqs.last, e.seq <= last { s.outOfOrder += 1 }
                    s.seqs.append(e.seq)
                    if let sent = FrameScan.sentNanos(e.json) { s.latencies.append(now - sent) }
                }
            }
        case .connected(let broker, _):
            probe.state.withLock { s in
                if s.lostAt != nil, s.recoveredAt == nil { s.recoveredAt = Monotonic.nanos() }
                s.broker = broker
                s.connections += 1
            }
        case .migrated(let from, let to, let reason):
            probe.state.withLock { s in
                s.broker = to
                s.moves.append("\(from)→\(to)")
                s.migrationReasons.append(reason)
            }
        case .disconnected:
            probe.state.withLock { s in
                s.disconnects += 1
                if let crashed, s.lostAt == nil, s.broker == crashed.broker { s.lostAt = Monotonic.nanos() }
            }
        case .notRecovered:
            probe.state.withLock { $0.notRecovered += 1 }
        case .failed:
            probe.state.withLock { $0.failures += 1 }
        }
    }

    /// Every subscriber has connected at least once.
    public var allConnected: Bool { probes.allSatisfy { $0.state.withLock { $0.connections > 0 } } }

    /// Subscribers per broker, as they see it.
    public var perBroker: [String: Int] {
        var counts: [String: Int] = [:]
        for p in probes { counts[p.state.withLock { $0.broker }, default: 0] += 1 }
        return counts
    }

    /// Every subscriber has every seq of `expected`.
    public func received(all expected: Set<Int64>) -> Bool {
        probes.allSatisfy { p in p.state.withLock { expected.isSubset(of: Set($0.seqs)) } }
    }

    /// Every subscriber's seqs strictly increase (the library drops duplicates).
    public var inOrder: Bool {
        probes.allSatisfy { p in p.state.withLock { s in zip(s.seqs, s.seqs.dropFirst()).allSatisfy { $0 < $1 } } }
    }

    /// Migrations followed, over all subscribers.
    public var migrationReasons: [String] { probes.flatMap { $0.state.withLock { $0.migrationReasons } } }

}
