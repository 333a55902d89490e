/// How many brokers a host (or a deployment) should run, from the controller's load figures,
/// free of I/O. Fed the brokers as the discovery list reports them and the time, it says
/// whether to add a broker or drain one; the owner starts processes (or, on Kubernetes, the
/// HorizontalPodAutoscaler does the same from the `tocsin_controller_utilization` metric).
///
/// Utilization is the busier of clients against capacity and deliveries against
/// `deliveriesPerBroker`, over the active brokers. With hysteresis and a cooldown:
/// - above `scaleOutAbove` for `sustain`, and fewer than `maximum` brokers: add one;
/// - below `scaleInBelow` for `sustain`, more than `minimum`, and the load would still fit
///   under `scaleOutAbove` on one broker fewer: drain the least loaded one (its clients move
///   away make-before-break, so none of them notices), then stop it;
/// - nothing within `cooldown` of the last change, nor while a broker it added has not yet
///   registered or one it drains has not yet left.
public struct Autoscaler: Sendable {
    public struct Policy: Sendable, Hashable {
        public var minimum = 1
        public var maximum = 8
        public var scaleOutAbove = 0.8
        public var scaleInBelow = 0.3
        /// Deliveries a second one broker is sized for (0: clients alone decide).
        public var deliveriesPerBroker = 0.0
        public var sustain: Duration = .seconds(3)
        public var cooldown: Duration = .seconds(15)
        /// A broker added that has not registered, or one drained that has not left, within this
        /// is waited for no longer.
        public var settleTimeout: Duration = .seconds(60)

        public init() {}

        /// The policy, or why it is not one.
        public func validated() throws(TocsinError) -> Policy {
            guard minimum >= 1, maximum >= minimum, maximum <= 64 else {
                throw TocsinError(.badRequest, "autoscaling needs 1 ≤ minimum ≤ maximum ≤ 64 brokers, got \(minimum)...\(maximum)")
            }
            guard scaleInBelow >= 0, scaleOutAbove <= 1, scaleInBelow < scaleOutAbove else {
                throw TocsinError(.badRequest, "autoscaling needs 0 ≤ scale-in threshold < scale-out threshold ≤ 1")
            }
            guard deliveriesPerBroker >= 0, deliveriesPerBroker.isFinite else {
                throw TocsinError(.badRequest, "deliveries per broker must be a finite number ≥ 0")
            }
            return self
        }
    }

    public enum Decision: Sendable, Hashable {
        case hold
        /// Start one more broker (the count after it).
        case addBroker(count: Int)
        /// Drain and stop this broker.
        case drain(id: String)
    }

    public let policy: Policy
    /// Since when utilization has been above (positive) or below (negative) its threshold.
    private var highSince: ClusterTime?
    private var lowSince: ClusterTime?
    private var lastChange: ClusterTime?
    /// Brokers it asked for and has not yet seen registered; the broker it is draining.
    public private(set) var expected: Int?
    public private(set) var draining: String?

    public init(policy: Policy) {
        self.policy = policy
    }

    /// The utilization of `brokers` (active ones), in 0...∞.
    public func utilization(_ brokers: [BrokerSummary], count: Int? = nil) -> Double {
        let active = brokers.filter { $0.state == .active }
        guard !active.isEmpty else { return 0 }
        let n = Double(count ?? active.count)
        let clients = Double(active.reduce(0) { $0 + $1.load.connections })
        let capacity = Double(active.reduce(0) { $0 + $1.capacity }) / Double(active.count) * n
        var u = capacity > 0 ? clients / capacity : 0
        if policy.deliveriesPerBroker > 0 {
            u = max(u, active.reduce(0) { $0 + $1.load.deliveriesPerSecond } / (policy.deliveriesPerBroker * n))
        }
        return u
    }

    /// One observation of the network (`running`: brokers the owner runs, live or starting).
    public mutating func observe(_ brokers: [BrokerSummary], running: Int, now: ClusterTime) -> Decision {
        let active = brokers.filter { $0.state == .active }
        if let last = lastChange, now - last >= policy.settleTimeout {
            expected = nil
            draining = nil
        }
        // Changes in flight: a broker asked for that has not registered, one draining that has not left.
        if let e = expected {
            if active.count >= e { expected = nil } else { return .hold }
        }
        if let d = draining {
            if brokers.contains(where: { $0.id == d }) { return .hold }
            draining = nil
        }
        if running < policy.minimum {
            return change(.addBroker(count: running + 1), expect: running + 1, now: now)
        }
        let u = utilization(brokers)
        highSince = u > policy.scaleOutAbove ? (highSince ?? now) : nil
        lowSince = u < policy.scaleInBelow ? (lowSince ?? now) : nil
        if let last = lastChange, now - last < policy.cooldown { return .hold }
        if let since = highSince, now - since >= policy.sustain, running < policy.maximum {
            return change(.addBroker(count: running + 1), expect: active.count + 1, now: now)
        }
        if let since = lowSince, now - since >= policy.sustain, running > policy.minimum, active.count > 1,
            utilization(brokers, count: active.count - 1) < policy.scaleOutAbove
        {
            let victim = active.min { ($0.load.connections, $0.id) < ($1.load.connections, $1.id) }!
            draining = victim.id
            return change(.drain(id: victim.id), expect: nil, now: now)
        }
        return .hold
    }

    private mutating func change(_ decision: Decision, expect: Int?, now: ClusterTime) -> Decision {
        lastChange = now
        highSince = nil
        lowSince = nil
        expected = expect
        return decision
    }
}
