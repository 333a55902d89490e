import Logging
import Synchronization
import TocsinClient
import TocsinCore

/// A publisher of the client library publishing `emergencies` events of one kind at a steady
/// rate until stopped (or `limit` events), one at a time, recording the seqs the network
/// acknowledged: the events every subscriber of that kind must receive. Each event carries its
/// publish time in its description ("t<nanos>") for the subscribers' latency.
public final class Feed: Sendable {
    public struct Configuration: Sendable {
        public var seeds: [String]
        public var kind: String
        /// Events per second (publishes due on a fixed schedule; a late one is sent at once).
        public var rate: Int
        /// Stop after this many publishes; nil: until `stop()`.
        public var limit: Int?
        /// The publisher's token (client `<kind>-publisher`), when the network requires tokens.
        public var token: TokenSource?

        public init(seeds: [String], kind: String, rate: Int = 100, limit: Int? = nil) {
            self.seeds = seeds
            self.kind = kind
            self.rate = rate
            self.limit = limit
        }
    }

    public let configuration: Configuration
    /// The seqs acknowledged, in order.
    public let acknowledged = Mutex<[Int64]>([])
    /// The broker that took the last publish (a `Publisher` keeps one until it fails).
    public let broker = Mutex<String?>(nil)
    /// Publish calls that failed (nothing acknowledged).
    public let failures = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    private let publisher: Publisher

    /// The feed, not yet publishing: `run()` publishes.
    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        publisher = Publisher(seeds: configuration.seeds, client: "\(configuration.kind)-publisher", logger: logger, token: configuration.token)
    }

    /// Publishes until `limit` events, `stop()` or cancellation (`async let publishing: Void =
    /// feed.run()` for the length of a scope).
    public func run() async {
        let start = ContinuousClock.now
        var n = 0
        while !stopped.load(ordering: .relaxed), !Task.isCancelled, n < configuration.limit ?? .max {
            let due = start + .seconds(Double(n) / Double(configuration.rate))
            if due > ContinuousClock.now { try? await Task.sleep(until: due) }
            n += 1
            do {
                let published = try await publisher.publish(
                    stream: "emergencies", events: [Self.event(kind: configuration.kind, sent: Monotonic.nanos())])
                acknowledged.withLock { $0 += published.seqs }
                broker.withLock { $0 = published.broker }
            } catch {
                failures.add(1, ordering: .relaxed)
            }
        }
    }

    /// An `emergencies` event of `kind` published at `sent` (monotonic nanos).
    public static func event(kind: String, sent: Int64) -> JSONValue {
        .object([
            "kind": .string(kind), "severity": .int(3), "location": .object(["lat": .double(52.0), "lon": .double(4.0)]),
            "area": .string("bench"), "description": .string("t\(sent)"), "time": .int(1_763_900_000_000),
        ])
    }

    /// Publishes acknowledged so far.
    public var count: Int { acknowledged.withLock { $0.count } }

    /// Every seq acknowledged so far.
    public var acknowledgedSeqs: Set<Int64> { Set(acknowledged.withLock { $0 }) }

    /// Asks `run()` to return after the publish in flight.
    public func stop() { stopped.store(true, ordering: .relaxed) }
}
