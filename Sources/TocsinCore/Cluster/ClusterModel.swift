// The values the controller's decisions work on: a broker's record, its load, its state.
// Membership, Placement and Rebalancer are pure functions over these; the controller process
// gathers them (from registrations and heartbeats), calls the functions and carries out the result.

/// Time on the controller's clock, measured from an arbitrary origin.
///
/// The controller passes `ContinuousClock.now - origin`; tests pass literal durations such as
/// `.seconds(10)`. Nothing in the cluster logic ever reads a clock itself, so lease expiry can be
/// tested by simply passing a later time.
public typealias ClusterTime = Duration

/// How busy a broker is, as it last reported in a heartbeat.
///
/// Placement and rebalancing count clients by `connections` (that is what a migration moves);
/// the other figures describe the cost of the work (the design measures load as work done, not
/// only as connections) and are carried for the controller's logs, metrics and future policies.
public struct BrokerLoad: Sendable, Hashable, Codable {
    /// Client WebSocket sessions currently held.
    public var connections: Int
    /// Distinct live subscriptions (after aggregation of identical ones).
    public var subscriptions: Int
    public var deliveriesPerSecond: Double
    public var publishesPerSecond: Double
    /// Cores busy: 1.0 means one core fully used.
    public var cpu: Double
    /// Clients told to migrate that have not left yet (not counted in `connections`). While any
    /// are in flight the controller does not plan again: their arrival is not in anyone's report yet.
    public var migrating: Int
    /// Commit → notification decided, over the last heartbeat interval (ms, bucketed); nil when
    /// no event was delivered in it.
    public var latencyP50Millis: Double? = nil
    public var latencyP99Millis: Double? = nil

    public init(
        connections: Int = 0,
        subscriptions: Int = 0,
        deliveriesPerSecond: Double = 0,
        publishesPerSecond: Double = 0,
        cpu: Double = 0,
        migrating: Int = 0
    ) {
        self.connections = connections
        self.subscriptions = subscriptions
        self.deliveriesPerSecond = deliveriesPerSecond
        self.publishesPerSecond = publishesPerSecond
        self.cpu = cpu
        self.migrating = migrating
    }

    /// An idle broker: what a freshly registered broker is assumed to carry until its first heartbeat.
    public static let zero = BrokerLoad()

    /// `self` if every figure is finite and not negative; otherwise `.badRequest` naming the field.
    /// A heartbeat's load goes straight into placement arithmetic, so nonsense is refused at the door.
    public func validated() throws(TocsinError) -> BrokerLoad {
        func check(_ name: String, _ value: Int) throws(TocsinError) {
            guard value >= 0 else { throw TocsinError(.badRequest, "load.\(name) must not be negative, got \(value)") }
        }
        func check(_ name: String, _ value: Double) throws(TocsinError) {
            guard value.isFinite, value >= 0 else {
                throw TocsinError(.badRequest, "load.\(name) must be a finite number >= 0, got \(value)")
            }
        }
        try check("connections", connections)
        try check("subscriptions", subscriptions)
        try check("deliveriesPerSecond", deliveriesPerSecond)
        try check("publishesPerSecond", publishesPerSecond)
        try check("cpu", cpu)
        try check("migrating", migrating)
        return self
    }
}

/// Whether a broker takes new clients.
///
/// A `draining` broker keeps serving the clients it has (and must keep renewing its lease) but is
/// never given a new client; the rebalancer plans to move all of its clients away.
public enum BrokerState: String, Sendable, Hashable, Codable {
    case active
    case draining
}

/// What the controller knows about one registered broker.
///
/// A broker's identity is its `id` plus its `incarnation` (unique per process start): a restarted
/// broker registers with a new incarnation and replaces its old self instead of resurrecting it, and
/// anything still arriving from the old incarnation is refused as stale.
public struct BrokerRecord: Sendable, Hashable {
    public var id: String
    public var incarnation: String
    /// Where clients connect (ws:// or wss://).
    public var webSocketURL: String
    /// Where publishers POST and the controller talks to the broker (http:// or https://).
    public var httpURL: String
    public var region: String
    /// Where the broker runs; used to find the nearest region. Optional: a region with no located
    /// broker is ordered after every region with one.
    public var location: GeoPoint?
    /// The most client connections the broker accepts. Placement never assigns beyond it and the
    /// rebalancer never moves clients onto a broker beyond it.
    public var capacity: Int
    public var state: BrokerState
    public var load: BrokerLoad
    /// When this incarnation registered.
    public var registeredAt: ClusterTime
    /// The broker is dead (for every purpose) at and after this time unless a heartbeat renews it.
    public var leaseExpiresAt: ClusterTime

    public init(
        id: String,
        incarnation: String,
        webSocketURL: String,
        httpURL: String,
        region: String,
        location: GeoPoint? = nil,
        capacity: Int,
        state: BrokerState = .active,
        load: BrokerLoad = .zero,
        registeredAt: ClusterTime = .zero,
        leaseExpiresAt: ClusterTime = .zero
    ) {
        self.id = id
        self.incarnation = incarnation
        self.webSocketURL = webSocketURL
        self.httpURL = httpURL
        self.region = region
        self.location = location
        self.capacity = capacity
        self.state = state
        self.load = load
        self.registeredAt = registeredAt
        self.leaseExpiresAt = leaseExpiresAt
    }

    /// True when the broker may be given a new client: active and below its capacity.
    public var hasCapacity: Bool { state == .active && load.connections < capacity }

    /// True while the lease runs: `now` is strictly before `leaseExpiresAt`.
    public func isLive(at now: ClusterTime) -> Bool { now < leaseExpiresAt }
}

extension GeoPoint {
    /// Distance in km to the nearest of `points`, or nil when `points` is empty.
    /// "Distance to a region" is the distance to the region's nearest located broker.
    static func nearestDistanceKm(from point: GeoPoint, to points: [GeoPoint]) -> Double? {
        var best: Double?
        for other in points {
            let d = point.distanceKm(to: other)
            if best.map({ d < $0 }) ?? true { best = d }
        }
        return best
    }
}

/// A value quoted for an error message: escaped (so control characters and quotes cannot forge log
/// lines) and cut to 80 characters (so a 10 MB id does not become a 10 MB message).
func quotedForMessage(_ value: String) -> String {
    let limit = 80
    if value.count <= limit { return String(reflecting: value) }
    return String(reflecting: String(value.prefix(limit))) + "… (\(value.count) characters)"
}
