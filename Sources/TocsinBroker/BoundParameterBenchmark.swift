import TocsinCore
import TocsinStore

/// `tocsin bench bound`: what a location update costs a broker with 10^6 subscriptions whose
/// `lat`/`lon` are bound to their clients' records in `userLocations`, on one core, in this
/// process: each update is the change event as the dataset's change stream carries it, read
/// (`JSON → record`), applied to the broker's table, resolved to the subscription's parameters
/// and moved in the matcher (`StateMachine.rebind`), which is the whole path of
/// `DatasetTables` → `BoundSubscriptions` but the store read and two uncontended locks. Then
/// matching latency per event with and without updates flowing between events.
public enum BoundParameterBenchmark {
    public struct Report: Sendable, CustomStringConvertible {
        public var subscriptions: Int
        public var setupSeconds: Double
        public var updatesPerSecond: Double
        public var matchMicrosQuiet: Double
        public var matchMicrosMoving: Double
        public var updatesBetweenEvents: Int
        public var averageMatches: Double

        public var description: String {
            func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
            return """
                \(subscriptions) subscriptions bound to userLocations (distinct places over ~400 km x 600 km, 10 km radius), set up in \(f(setupSeconds)) s
                location updates (change event parsed, table updated, parameters resolved, matcher moved): \(f(updatesPerSecond, 0)) per second on one core
                matching per event, no updates: \(f(matchMicrosQuiet)) µs (\(f(averageMatches)) subscriptions matched on average)
                matching per event with \(updatesBetweenEvents) updates between events: \(f(matchMicrosMoving)) µs per event (the updates not counted)
                """
        }
    }

    public static func run(subscriptions: Int = 1_000_000, updates: Int = 200_000) throws -> Report {
        let stream = try StreamSchema(fields: [FieldSpec(name: "severity", type: .int), FieldSpec(name: "location", type: .geo)])
        let channel = try ChannelCompiler.compile(
            ChannelDefinition(
                name: "EmergenciesNearMe", stream: "emergencies",
                params: [ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double)],
                whereClause: "distance(location, point($lat, $lon)) <= 10 && severity >= 2"),
            schema: stream)
        let userLocations = try DatasetDefinition(
            name: "userLocations", schema: StreamSchema(fields: [FieldSpec(name: "client", type: .string), FieldSpec(name: "location", type: .geo)]),
            key: "client")
        let params: [String: JSONValue] = ["lat": ["bind": "userLocations.location.lat"], "lon": ["bind": "userLocations.location.lon"]]
        let bindings = try channel.bindings(params: params, datasets: ["userLocations": userLocations])
        let changeSchema = userLocations.changeStream.schema

        var rng = SplitMix(seed: 7)
        func place() -> GeoPoint {
            GeoPoint(lat: Double.random(in: 48...52, using: &rng), lon: Double.random(in: 2...10, using: &rng))
        }
        let started = ContinuousClock.now
        var table = DatasetTable(definition: userLocations)
        var machine = StreamDispatch.StateMachine<Int>(stream: "emergencies", epoch: "e", position: 0, schema: stream)
        var clients: [String] = []
        clients.reserveCapacity(subscriptions)
        for i in 0..<subscriptions {
            let client = "phone\(i)"
            clients.append(client)
            let record: Record = [.string(client), .geo(place())]
            table.apply([.upsert(record)], version: Int64(i + 1))
            let values = try channel.bind(params: params, bindings: bindings, records: ["userLocations": record], client: client)
            _ = machine.attach(client, recipient: i, channel: channel, params: values)
            _ = machine.goLiveIfCaughtUp(client, recipient: i, replayedTo: 0)
        }
        let setup = seconds(ContinuousClock.now - started)

        // The change events as the stream carries them, prepared before the clock starts.
        let moves: [(index: Int, json: String)] = (0..<updates).map { _ in
            let i = Int.random(in: 0..<subscriptions, using: &rng)
            let p = place()
            return (i, userLocations.changeEvent(.upsert([.string(clients[i]), .geo(p)])))
        }
        var version = Int64(subscriptions)
        func apply(_ move: (index: Int, json: String)) throws {
            guard let record = try? changeSchema.record(from: JSONValue.parse(move.json)), let write = userLocations.write(fromChange: record) else {
                throw TocsinError(.internalError, "a change event did not read")
            }
            version += 1
            table.apply([write], version: version)
            let client = clients[move.index]
            guard let now = table.record(key: .string(client)) else { return }
            let values = try channel.bind(params: params, bindings: bindings, records: ["userLocations": now], client: client)
            _ = machine.rebind(client, recipient: move.index, params: values)
        }
        let updateStart = ContinuousClock.now
        for move in moves { try apply(move) }
        let updateSeconds = seconds(ContinuousClock.now - updateStart)

        let events: [StoredEvent] = (0..<20_000).map { n in
            let p = place()
            return StoredEvent(seq: Int64(n + 1), publishedAtMillis: 0, json: #"{"severity":3,"location":{"lat":\#(p.lat),"lon":\#(p.lon)}}"#)
        }
        var actions: [StreamDispatch.Action<Int>] = []
        var matched = 0
        let quietStart = ContinuousClock.now
        for event in events.prefix(10_000) {
            actions.removeAll(keepingCapacity: true)
            matched += machine.dispatch(CollectionOfOne(event), nowMillis: 0, into: &actions)
        }
        let quiet = seconds(ContinuousClock.now - quietStart) / 10_000 * 1e6
        let between = 5
        var matchTime = Duration.zero
        var next = 0
        for event in events.suffix(10_000) {
            for _ in 0..<between {
                try apply(moves[next % moves.count])
                next += 1
            }
            actions.removeAll(keepingCapacity: true)
            let t = ContinuousClock.now
            _ = machine.dispatch(CollectionOfOne(event), nowMillis: 0, into: &actions)
            matchTime += ContinuousClock.now - t
        }
        return Report(
            subscriptions: subscriptions, setupSeconds: setup, updatesPerSecond: Double(updates) / updateSeconds, matchMicrosQuiet: quiet,
            matchMicrosMoving: seconds(matchTime) / 10_000 * 1e6, updatesBetweenEvents: between, averageMatches: Double(matched) / 10_000)
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
