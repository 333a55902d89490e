/// The JSON the controller, the brokers and the client library exchange (docs/protocol.md,
/// "Cluster API"). Decoding is strict where a peer's mistake must be reported (registration,
/// heartbeat) and tolerant of unknown extra fields everywhere, so newer peers can add fields.

/// A broker as the discovery list, `assign` and heartbeat replies describe it.
public struct BrokerSummary: Sendable, Hashable {
    public var id: String
    public var incarnation: String
    public var webSocketURL: String
    public var httpURL: String
    public var region: String
    public var location: GeoPoint?
    public var capacity: Int
    public var state: BrokerState
    public var load: BrokerLoad

    public init(
        id: String, incarnation: String, webSocketURL: String, httpURL: String, region: String, location: GeoPoint?, capacity: Int,
        state: BrokerState, load: BrokerLoad
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
    }

    public init(_ record: BrokerRecord) {
        id = record.id
        incarnation = record.incarnation
        webSocketURL = record.webSocketURL
        httpURL = record.httpURL
        region = record.region
        location = record.location
        capacity = record.capacity
        state = record.state
        load = record.load
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id), "incarnation": .string(incarnation), "wsURL": .string(webSocketURL), "httpURL": .string(httpURL),
            "region": .string(region), "capacity": .int(Int64(capacity)), "state": .string(state.rawValue), "load": load.json,
        ]
        if let location { o["location"] = location.json }
        return .object(o)
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "broker", code: .badRequest)
        id = try fields.string("id")
        incarnation = try fields.string("incarnation")
        webSocketURL = try fields.string("wsURL")
        httpURL = try fields.string("httpURL")
        region = try fields.string("region")
        location = try fields.location("location")
        capacity = Int(try fields.int("capacity"))
        guard let state = BrokerState(rawValue: try fields.string("state")) else {
            throw TocsinError(.badRequest, "broker: 'state' must be 'active' or 'draining'")
        }
        self.state = state
        load = try fields.optional("load").map { v throws(TocsinError) in try BrokerLoad(json: v) } ?? .zero
    }
}

extension GeoPoint {
    var json: JSONValue { .object(["lat": .double(lat), "lon": .double(lon)]) }
}

extension BrokerLoad {
    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "connections": .int(Int64(connections)), "subscriptions": .int(Int64(subscriptions)),
            "deliveriesPerSecond": .double(deliveriesPerSecond), "publishesPerSecond": .double(publishesPerSecond),
            "cpu": .double(cpu), "migrating": .int(Int64(migrating)),
        ]
        if let latencyP50Millis { o["latencyP50Millis"] = .double(latencyP50Millis) }
        if let latencyP99Millis { o["latencyP99Millis"] = .double(latencyP99Millis) }
        return .object(o)
    }

    /// A load report. Counts must be non-negative integers and rates finite non-negative numbers.
    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "load", code: .badRequest)
        func count(_ key: String) throws(TocsinError) -> Int {
            let v = try fields.int(key, default: 0)
            guard v >= 0, v <= Int64(Int32.max) else { throw TocsinError(.badRequest, "load: '\(key)' must be a count ≥ 0, got \(v)") }
            return Int(v)
        }
        func rate(_ key: String) throws(TocsinError) -> Double {
            let v = try fields.double(key, default: 0)
            guard v.isFinite, v >= 0 else { throw TocsinError(.badRequest, "load: '\(key)' must be a finite number ≥ 0") }
            return v
        }
        self.init(
            connections: try count("connections"), subscriptions: try count("subscriptions"),
            deliveriesPerSecond: try rate("deliveriesPerSecond"), publishesPerSecond: try rate("publishesPerSecond"), cpu: try rate("cpu"),
            migrating: try count("migrating"))
        if fields.object["latencyP50Millis"] != nil { latencyP50Millis = try rate("latencyP50Millis") }
        if fields.object["latencyP99Millis"] != nil { latencyP99Millis = try rate("latencyP99Millis") }
    }
}

extension RegistrationRequest {
    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id), "incarnation": .string(incarnation), "wsURL": .string(webSocketURL), "httpURL": .string(httpURL),
            "region": .string(region), "capacity": .int(Int64(capacity)),
        ]
        if let location { o["location"] = location.json }
        if let version { o["version"] = .string(version) }
        if let startedAtMillis { o["startedAtMillis"] = .int(startedAtMillis) }
        if draining { o["draining"] = .bool(true) }
        return .object(o)
    }

    /// A registration body; shape errors are `invalid_registration` like value errors, and the
    /// values are checked by `validated()`.
    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "registration", code: .invalidRegistration)
        let capacity = try fields.int("capacity")
        guard let small = Int(exactly: capacity), small <= Int(Int32.max) else {
            throw TocsinError(.invalidRegistration, "registration: 'capacity' is out of range")
        }
        self.init(
            id: try fields.string("id"), incarnation: try fields.string("incarnation"), webSocketURL: try fields.string("wsURL"),
            httpURL: try fields.string("httpURL"), region: try fields.string("region"), location: try fields.location("location"),
            capacity: small)
        version = try fields.optional("version").map { _ throws(TocsinError) in try fields.string("version") }
        startedAtMillis = try fields.optional("startedAtMillis").map { _ throws(TocsinError) in try fields.int("startedAtMillis") }
        draining = try fields.optional("draining")?.boolValue ?? false
        self = try validated()
    }
}

/// The discovery list: every live broker, and where the controller is.
public struct ClusterView: Sendable, Hashable {
    /// The controller's HTTP URL, where `assign` is asked; nil if unknown. With several
    /// controllers, the one that answered (followers answer `assign` too).
    public var controller: String?
    public var brokers: [BrokerSummary]
    /// The leading controller's HTTP URL, where brokers register; nil when none is known.
    public var leader: String?
    /// The leader's fencing epoch (0 for a controller that runs alone, without a store).
    public var epoch: Int64?

    public init(controller: String?, brokers: [BrokerSummary], leader: String? = nil, epoch: Int64? = nil) {
        self.controller = controller
        self.brokers = brokers
        self.leader = leader
        self.epoch = epoch
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = ["brokers": .array(brokers.map(\.json))]
        if let controller { o["controller"] = .string(controller) }
        if let leader { o["leader"] = .string(leader) }
        if let epoch { o["epoch"] = .int(epoch) }
        return .object(o)
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "cluster", code: .badRequest)
        controller = try fields.optional("controller")?.stringValue
        leader = try fields.optional("leader")?.stringValue
        epoch = try fields.optional("epoch").map { _ throws(TocsinError) in try fields.int("epoch") }
        guard let list = try fields.optional("brokers")?.arrayValue else {
            throw TocsinError(.badRequest, "cluster: 'brokers' must be an array")
        }
        var brokers: [BrokerSummary] = []
        for b in list { brokers.append(try BrokerSummary(json: b)) }
        self.brokers = brokers
    }
}

/// The controller's answer to `GET /v1/assign`.
public struct AssignReply: Sendable, Hashable {
    public var broker: BrokerSummary
    public var alternates: [BrokerSummary]
    public var region: String

    public init(_ assignment: Assignment) {
        broker = BrokerSummary(assignment.broker)
        alternates = assignment.alternates.map(BrokerSummary.init)
        region = assignment.region
    }

    public var json: JSONValue {
        .object(["broker": broker.json, "alternates": .array(alternates.map(\.json)), "region": .string(region)])
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "assignment", code: .badRequest)
        guard let b = try fields.optional("broker") else { throw TocsinError(.badRequest, "assignment: 'broker' is missing") }
        broker = try BrokerSummary(json: b)
        var alternates: [BrokerSummary] = []
        for a in try fields.optional("alternates")?.arrayValue ?? [] { alternates.append(try BrokerSummary(json: a)) }
        self.alternates = alternates
        region = try fields.string("region")
    }
}

/// An order the controller gives a broker in a heartbeat reply: send `count` of your clients
/// to `to` (`reason`: `rebalance` or `drain`).
public struct MigrateCommand: Sendable, Hashable {
    public var count: Int
    public var to: BrokerSummary
    public var reason: String
    /// The fencing epoch of the controller that gave it: a broker refuses an order with a lower
    /// epoch than the highest it has seen (it comes from a deposed leader).
    public var epoch: Int64

    public init(count: Int, to: BrokerSummary, reason: String, epoch: Int64 = 0) {
        self.count = count
        self.to = to
        self.reason = reason
        self.epoch = epoch
    }

    public var json: JSONValue {
        .object(["type": .string("migrate"), "count": .int(Int64(count)), "to": to.json, "reason": .string(reason), "epoch": .int(epoch)])
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "command", code: .badRequest)
        guard try fields.string("type") == "migrate" else { throw TocsinError(.badRequest, "command: unknown type") }
        guard let to = try fields.optional("to") else { throw TocsinError(.badRequest, "command: 'to' is missing") }
        self.init(
            count: Int(try fields.int("count")), to: try BrokerSummary(json: to), reason: try fields.string("reason"),
            epoch: try fields.int("epoch", default: 0))
    }
}

/// The reply to a registration or heartbeat: the lease, orders, and the fresh discovery list.
public struct LeaseReply: Sendable, Hashable {
    public var leaseMillis: Int64
    public var heartbeatMillis: Int64
    public var commands: [MigrateCommand]
    /// The discovery list. A heartbeat's reply leaves it out when the broker reported holding
    /// the current one (`HeartbeatReport.viewVersion` equal to `viewVersion`): with 1,000
    /// brokers, sending every broker all 1,000 each second was the controller's whole cost.
    public var cluster: ClusterView?
    /// The version of the controller's discovery list (it changes when brokers join, leave or
    /// change state, when the leader changes, and every few seconds for the loads); nil from a
    /// controller that does not version it.
    public var viewVersion: Int64?
    /// The fencing epoch of the controller that answered (0 for one that runs alone): a broker
    /// takes nothing from a reply with a lower epoch than the highest it has seen.
    public var epoch: Int64
    /// The broker's live configuration, when it reported running another version.
    public var config: ConfigPush?
    /// Operator commands for the broker (`tocsin command`), sent in every reply until it reports their results.
    public var orders: [CommandOrder]

    public init(
        leaseMillis: Int64, heartbeatMillis: Int64, commands: [MigrateCommand], cluster: ClusterView?, epoch: Int64 = 0, config: ConfigPush? = nil,
        orders: [CommandOrder] = [], viewVersion: Int64? = nil
    ) {
        self.leaseMillis = leaseMillis
        self.heartbeatMillis = heartbeatMillis
        self.commands = commands
        self.cluster = cluster
        self.viewVersion = viewVersion
        self.epoch = epoch
        self.config = config
        self.orders = orders
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "leaseMillis": .int(leaseMillis), "heartbeatMillis": .int(heartbeatMillis),
            "commands": .array(commands.map(\.json)), "epoch": .int(epoch),
        ]
        if let cluster { o["cluster"] = cluster.json }
        if let viewVersion { o["viewVersion"] = .int(viewVersion) }
        if let config { o["config"] = config.json }
        if !orders.isEmpty { o["orders"] = .array(orders.map(\.json)) }
        return .object(o)
    }

    public init(json: JSONValue) throws(TocsinError) {
        let fields = try Fields(json, what: "lease", code: .badRequest)
        var commands: [MigrateCommand] = []
        for c in try fields.optional("commands")?.arrayValue ?? [] { commands.append(try MigrateCommand(json: c)) }
        let viewVersion = try fields.optional("viewVersion").map { _ throws(TocsinError) in try fields.int("viewVersion") }
        // Without a version, the list must be there (a reply may leave it out only for a broker that holds it).
        let cluster = try fields.optional("cluster")
        if cluster == nil, viewVersion == nil { throw TocsinError(.badRequest, "lease: 'cluster' is missing") }
        var orders: [CommandOrder] = []
        for o in try fields.optional("orders")?.arrayValue ?? [] { orders.append(try CommandOrder(json: o)) }
        self.init(
            leaseMillis: try fields.int("leaseMillis"), heartbeatMillis: try fields.int("heartbeatMillis"), commands: commands,
            cluster: try cluster.map { v throws(TocsinError) in try ClusterView(json: v) }, epoch: try fields.int("epoch", default: 0),
            config: try fields.optional("config").map { v throws(TocsinError) in try ConfigPush(json: v) }, orders: orders, viewVersion: viewVersion)
    }
}

/// What a broker says in a heartbeat besides its load: whether it wants to be draining (it is
/// the authority on that: a `drain` command, or its graceful shutdown), the live configuration
/// version it runs, and the results of operator commands it carried out.
public struct HeartbeatReport: Sendable, Hashable {
    public var load: BrokerLoad
    /// true: the broker asks to be draining (it is drained if active). false or nil: no
    /// opinion; a drained broker takes clients again only when it reports an `undrain` command done.
    public var draining: Bool?
    public var configVersion: Int64?
    public var results: [CommandResult]
    /// The discovery list version the broker holds (`LeaseReply.viewVersion`): the reply leaves
    /// the list out when it is still the current one. nil: always send it.
    public var viewVersion: Int64?

    public init(
        load: BrokerLoad, draining: Bool? = nil, configVersion: Int64? = nil, results: [CommandResult] = [], viewVersion: Int64? = nil
    ) {
        self.load = load
        self.draining = draining
        self.configVersion = configVersion
        self.results = results
        self.viewVersion = viewVersion
    }

    /// The heartbeat body with `incarnation`.
    public func json(incarnation: String) -> JSONValue {
        var o: [String: JSONValue] = ["incarnation": .string(incarnation), "load": load.json]
        if let draining { o["draining"] = .bool(draining) }
        if let configVersion { o["configVersion"] = .int(configVersion) }
        if !results.isEmpty { o["results"] = .array(results.map(\.json)) }
        if let viewVersion { o["viewVersion"] = .int(viewVersion) }
        return .object(o)
    }

    /// A heartbeat body: its incarnation and report.
    public static func parse(_ body: JSONValue) throws(TocsinError) -> (incarnation: String, report: HeartbeatReport) {
        let fields = try Fields(body, what: "heartbeat", code: .badRequest)
        let incarnation = try fields.string("incarnation")
        let load = try fields.optional("load").map { v throws(TocsinError) in try BrokerLoad(json: v) } ?? .zero
        var draining: Bool?
        if let d = try fields.optional("draining") {
            guard let b = d.boolValue else { throw TocsinError(.badRequest, "heartbeat: 'draining' must be true or false") }
            draining = b
        }
        let configVersion = try fields.optional("configVersion").map { _ throws(TocsinError) in try fields.int("configVersion") }
        let list = try fields.optional("results")?.arrayValue ?? []
        guard list.count <= 1000 else { throw TocsinError(.badRequest, "heartbeat: at most 1000 results at once") }
        var results: [CommandResult] = []
        for r in list { results.append(try CommandResult(json: r)) }
        let viewVersion = try fields.optional("viewVersion").map { _ throws(TocsinError) in try fields.int("viewVersion") }
        return (
            incarnation,
            HeartbeatReport(load: load, draining: draining, configVersion: configVersion, results: results, viewVersion: viewVersion)
        )
    }
}

/// Typed access to a JSON object's fields with errors that name the field.
struct Fields {
    let object: [String: JSONValue]
    let what: String
    let code: TocsinError.Code

    init(_ json: JSONValue, what: String, code: TocsinError.Code) throws(TocsinError) {
        guard case .object(let o) = json else { throw TocsinError(code, "\(what) must be a JSON object, got \(json.kindName)") }
        object = o
        self.what = what
        self.code = code
    }

    func optional(_ key: String) throws(TocsinError) -> JSONValue? {
        guard let v = object[key], v != .null else { return nil }
        return v
    }

    func string(_ key: String) throws(TocsinError) -> String {
        guard let v = object[key] else { throw TocsinError(code, "\(what): '\(key)' is missing") }
        guard let s = v.stringValue else { throw TocsinError(code, "\(what): '\(key)' must be a string, got \(v.kindName)") }
        return s
    }

    func int(_ key: String, default value: Int64? = nil) throws(TocsinError) -> Int64 {
        guard let v = object[key] else {
            if let value { return value }
            throw TocsinError(code, "\(what): '\(key)' is missing")
        }
        guard let i = v.intValue else { throw TocsinError(code, "\(what): '\(key)' must be an integer, got \(v.kindName)") }
        return i
    }

    func double(_ key: String, default value: Double) throws(TocsinError) -> Double {
        guard let v = object[key] else { return value }
        guard let d = v.doubleValue else { throw TocsinError(code, "\(what): '\(key)' must be a number, got \(v.kindName)") }
        return d
    }

    /// `{"lat": .., "lon": ..}` in range, or absent.
    func location(_ key: String) throws(TocsinError) -> GeoPoint? {
        guard let v = try optional(key) else { return nil }
        guard let lat = v["lat"]?.doubleValue, let lon = v["lon"]?.doubleValue else {
            throw TocsinError(code, "\(what): '\(key)' must be {\"lat\": number, \"lon\": number}")
        }
        guard let point = GeoPoint.validated(lat: lat, lon: lon) else {
            throw TocsinError(code, "\(what): '\(key)' is out of range (lat in [-90, 90], lon in [-180, 180])")
        }
        return point
    }
}
