/// What the dashboard draws, kept by the controller: one sample of the network a second (the
/// last five minutes) and the latest notable events (brokers joining, dying, draining; leaders;
/// configuration changes; commands). Pure; bounded memory.
public struct NetworkTimeline: Sendable {
    public struct Sample: Sendable, Hashable {
        public var atMillis: Int64
        public var brokers: Int
        public var clients: Int
        public var subscriptions: Int
        public var deliveriesPerSecond: Double
        public var publishesPerSecond: Double
        /// The highest of the brokers' (commit → notify, ms).
        public var latencyP50Millis: Double?
        public var latencyP99Millis: Double?
        /// Clients ordered to migrate, and brokers that died (failovers), since the previous sample.
        public var migrations: Int
        public var failovers: Int

        public var json: JSONValue {
            var o: [String: JSONValue] = [
                "at": .int(atMillis), "brokers": .int(Int64(brokers)), "clients": .int(Int64(clients)), "subscriptions": .int(Int64(subscriptions)),
                "deliveriesPerSecond": .double(deliveriesPerSecond), "publishesPerSecond": .double(publishesPerSecond),
                "migrations": .int(Int64(migrations)), "failovers": .int(Int64(failovers)),
            ]
            if let latencyP50Millis { o["p50"] = .double(latencyP50Millis) }
            if let latencyP99Millis { o["p99"] = .double(latencyP99Millis) }
            return .object(o)
        }
    }

    public struct Event: Sendable, Hashable {
        public var atMillis: Int64
        /// `joined`, `gone`, `draining`, `active`, `leader`, `config`, `command`, `rebalance`.
        public var kind: String
        /// The component it is about, if one.
        public var subject: String?
        public var text: String

        public var json: JSONValue {
            var o: [String: JSONValue] = ["at": .int(atMillis), "kind": .string(kind), "text": .string(text)]
            if let subject { o["subject"] = .string(subject) }
            return .object(o)
        }
    }

    public static let sampleLimit = 300
    public static let eventLimit = 100
    public private(set) var samples: [Sample] = []
    public private(set) var events: [Event] = []
    /// Brokers gone in the last minute (id → when), so the dashboard can show them as gone.
    public private(set) var gone: [String: Int64] = [:]
    private var migrationsSince = 0
    private var failoversSince = 0

    public init() {}

    /// A notable event.
    public mutating func note(_ kind: String, subject: String? = nil, _ text: String, atMillis: Int64) {
        events.append(Event(atMillis: atMillis, kind: kind, subject: subject, text: text))
        if events.count > Self.eventLimit { events.removeFirst(events.count - Self.eventLimit) }
        switch kind {
        case "gone":
            if let subject { gone[subject] = atMillis }
            failoversSince += 1
        case "joined":
            if let subject { gone[subject] = nil }
        default: break
        }
    }

    /// Clients ordered to move.
    public mutating func migrationsOrdered(_ count: Int) { migrationsSince += count }

    /// One sample of `brokers` (the live ones) at `atMillis`.
    public mutating func sample(_ brokers: [BrokerSummary], atMillis: Int64) {
        let loads = brokers.map(\.load)
        samples.append(
            Sample(
                atMillis: atMillis, brokers: brokers.count, clients: loads.reduce(0) { $0 + $1.connections },
                subscriptions: loads.reduce(0) { $0 + $1.subscriptions }, deliveriesPerSecond: loads.reduce(0) { $0 + $1.deliveriesPerSecond },
                publishesPerSecond: loads.reduce(0) { $0 + $1.publishesPerSecond }, latencyP50Millis: loads.compactMap(\.latencyP50Millis).max(),
                latencyP99Millis: loads.compactMap(\.latencyP99Millis).max(), migrations: migrationsSince, failovers: failoversSince))
        if samples.count > Self.sampleLimit { samples.removeFirst(samples.count - Self.sampleLimit) }
        migrationsSince = 0
        failoversSince = 0
        let live = Set(brokers.map(\.id))
        gone = gone.filter { atMillis - $0.value < 60_000 && !live.contains($0.key) }
    }
}
