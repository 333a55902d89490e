import Testing

@testable import TocsinCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Hand-built compiled channels (the language compiler is not a dependency of these tests):
/// each has a plan, a residual, and a `predicate` that spells out the whole where-clause with
/// the documented semantics of the plan's conjunct — the brute-force reference.
enum Fixtures {
    static func channel(
        name: String, fields: [FieldSpec], params: [ChannelParameter], plan: IndexPlan,
        residual: Predicate, predicate: Predicate
    ) -> CompiledChannel {
        let schema = try! StreamSchema(fields: fields)
        let definition = ChannelDefinition(name: name, stream: "s", params: params, whereClause: "(hand-built)")
        return CompiledChannel(definition: definition, schema: schema, plan: plan, residual: residual, predicate: predicate)
    }

    static func atLeast(_ a: Value, _ b: Value) -> Bool {
        guard let x = a.numeric, let y = b.numeric else { return false }
        return x >= y
    }

    // MARK: EmergenciesNearMe: distance(location, point($lat, $lon)) <= $radiusKm && severity >= $minSeverity

    /// Record: [location: geo?, severity: int]. Params: [lat, lon, radiusKm, minSeverity].
    static func emergenciesNearMe(inclusive: Bool = true) -> CompiledChannel {
        let residual = Predicate { r, p, _ in atLeast(r[1], p[3]) }
        let predicate = Predicate { r, p, _ in
            guard case .geo(let event) = r[0], let lat = p[0].numeric, let lon = p[1].numeric,
                let radius = p[2].numeric
            else { return false }
            // The documented geo conjunct: points out of range never match.
            guard GeoIndex.inRange(lat: lat, lon: lon), GeoIndex.inRange(lat: event.lat, lon: event.lon) else {
                return false
            }
            let d = event.distanceKm(to: GeoPoint(lat: lat, lon: lon))
            return (inclusive ? d <= radius : d < radius) && atLeast(r[1], p[3])
        }
        return channel(
            name: "EmergenciesNearMe",
            fields: [FieldSpec(name: "location", type: .geo, optional: true), FieldSpec(name: "severity", type: .int)],
            params: [
                ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
                ChannelParameter(name: "radiusKm", type: .double), ChannelParameter(name: "minSeverity", type: .int),
            ],
            plan: .geoRadius(field: 0, lat: .param(0), lon: .param(1), radiusKm: .param(2), inclusive: inclusive),
            residual: residual, predicate: predicate)
    }

    static func geoParams(_ lat: Double, _ lon: Double, _ radiusKm: Double, minSeverity: Int64 = 0) -> [Value] {
        [.double(lat), .double(lon), .double(radiusKm), .int(minSeverity)]
    }

    static func geoEvent(_ lat: Double, _ lon: Double, severity: Int64 = 5) -> Record {
        [.geo(GeoPoint(lat: lat, lon: lon)), .int(severity)]
    }

    // MARK: region == $region && severity >= $minSeverity

    /// Record: [region: string?, severity: int]. Params: [region, minSeverity].
    static func regionAlerts() -> CompiledChannel {
        channel(
            name: "RegionAlerts",
            fields: [FieldSpec(name: "region", type: .string, optional: true), FieldSpec(name: "severity", type: .int)],
            params: [ChannelParameter(name: "region", type: .string), ChannelParameter(name: "minSeverity", type: .int)],
            plan: .equality(field: 0, param: 0),
            residual: Predicate { r, p, _ in atLeast(r[1], p[1]) },
            predicate: Predicate { r, p, _ in
                if case .null = r[0] { return false }
                if case .null = p[0] { return false }
                return r[0] == p[0] && atLeast(r[1], p[1])
            })
    }

    // MARK: tag in $tags && severity >= $minSeverity

    /// Record: [tag: string?, severity: int]. Params: [tags: list<string>, minSeverity].
    static func taggedAlerts() -> CompiledChannel {
        channel(
            name: "TaggedAlerts",
            fields: [FieldSpec(name: "tag", type: .string, optional: true), FieldSpec(name: "severity", type: .int)],
            params: [ChannelParameter(name: "tags", type: .stringList), ChannelParameter(name: "minSeverity", type: .int)],
            plan: .membership(field: 0, param: 0),
            residual: Predicate { r, p, _ in atLeast(r[1], p[1]) },
            predicate: Predicate { r, p, _ in
                guard case .string(let s) = r[0], case .stringList(let list) = p[0] else { return false }
                return list.contains(s) && atLeast(r[1], p[1])
            })
    }

    // MARK: value <cmp> $bound && kind == "x" (kind checked by the residual)

    /// Record: [value: double?, kind: string]. Params: [bound: double].
    static func thresholdChannel(_ comparison: Comparison, bound: Operand = .param(0)) -> CompiledChannel {
        channel(
            name: "Threshold\(comparison.rawValue)",
            fields: [FieldSpec(name: "value", type: .double, optional: true), FieldSpec(name: "kind", type: .string)],
            params: [ChannelParameter(name: "bound", type: .double)],
            plan: .threshold(field: 0, comparison: comparison, bound: bound),
            residual: Predicate { r, _, _ in r[1] != .string("ignored") },
            predicate: Predicate { r, p, _ in
                let b: Double?
                switch bound {
                case .constant(let c): b = c
                case .param(let i): b = p[i].numeric
                }
                guard let x = r[0].numeric, let b else { return false }
                guard r[1] != .string("ignored") else { return false }
                switch comparison {
                case .lessThan: return x < b
                case .lessOrEqual: return x <= b
                case .greaterThan: return x > b
                case .greaterOrEqual: return x >= b
                }
            })
    }

    // MARK: value % $divisor == 0 (no index: scan)

    /// Record: [value: int]. Params: [divisor: int]; `now()` odd rejects everything.
    static func scanChannel() -> CompiledChannel {
        let predicate = Predicate { r, p, now in
            guard now % 2 == 0, case .int(let v) = r[0], case .int(let d) = p[0], d != 0 else { return false }
            return v % d == 0
        }
        return channel(
            name: "Divisible", fields: [FieldSpec(name: "value", type: .int)],
            params: [ChannelParameter(name: "divisor", type: .int)], plan: .scan, residual: predicate, predicate: predicate)
    }
}

/// An acquire/release sequence replayed on a `ChannelIndex` next to a trivially correct model.
enum Op: Sendable, CustomStringConvertible {
    /// Acquire `pool[k % pool.count]`.
    case acquire(Int)
    /// Release the `k % live.count`-th live interest (sorted by id).
    case release(Int)

    var description: String {
        switch self {
        case .acquire(let k): "+\(k)"
        case .release(let k): "-\(k)"
        }
    }
}

/// Replays `ops`, checking aggregation, ids and counts as it goes, and every `checkEvery` ops
/// (and at the end) compares `match` with the brute-force predicate over every live interest.
struct BruteForceHarness {
    var index: ChannelIndex
    var live: [InterestID: (params: [Value], refs: Int)] = [:]
    var problems: [String] = []
    var matchedTotal = 0

    init(channel: CompiledChannel) {
        index = ChannelIndex(channel: channel)
    }

    static func identical(_ a: [Value], _ b: [Value]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { x, y in x == y || "\(x)" == "\(y)" }
    }

    mutating func apply(_ op: Op, pool: [[Value]]) {
        switch op {
        case .acquire(let k):
            guard !pool.isEmpty else { return }
            let params = pool[k % pool.count]
            let existing = params == params ? live.first { $0.value.params == params }?.key : nil
            let id = index.acquire(params: params)
            if let existing {
                if id != existing { problems.append("acquire of live params \(params) gave \(id), expected \(existing)") }
                live[id]!.refs += 1
            } else {
                if live[id] != nil { problems.append("acquire of new params \(params) reused live \(id)") }
                live[id] = (params, 1)
            }
        case .release(let k):
            guard !live.isEmpty else { return }
            let id = live.keys.sorted()[k % live.count]
            let removed = index.release(id)
            let refs = live[id]!.refs
            if removed != (refs == 1) { problems.append("release of \(id) with \(refs) refs returned \(removed)") }
            if refs == 1 { live[id] = nil } else { live[id]!.refs -= 1 }
        }
    }

    mutating func check(events: [Record], nowMillis: Int64 = 0) {
        if index.count != live.count { problems.append("count \(index.count), expected \(live.count)") }
        for (id, entry) in live where !Self.identical(index.params(of: id), entry.params) {
            problems.append("params(of: \(id)) = \(index.params(of: id)), expected \(entry.params)")
        }
        var result: [InterestID] = []
        for event in events {
            result.removeAll(keepingCapacity: true)
            index.match(event, nowMillis: nowMillis, into: &result)
            let got = Set(result)
            if got.count != result.count { problems.append("duplicates in match for \(event)") }
            let expected = Set(
                live.filter { index.channel.predicate.evaluate(event, $0.value.params, nowMillis) }.keys)
            matchedTotal += expected.count
            if got != expected {
                let missing = expected.subtracting(got).sorted().prefix(3).map { "\($0) \(live[$0]!.params)" }
                let extra = got.subtracting(expected).sorted().prefix(3).map { "\($0) \(live[$0]?.params ?? [])" }
                problems.append("event \(event): missing \(missing), extra \(extra)")
            }
        }
    }

    /// Runs the whole scenario and records an issue listing the first problems, if any.
    static func run(
        channel: CompiledChannel, pool: [[Value]], ops: [Op], events: [Record], checkEvery: Int = 100,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> BruteForceHarness {
        var harness = BruteForceHarness(channel: channel)
        for (n, op) in ops.enumerated() {
            harness.apply(op, pool: pool)
            if (n + 1) % checkEvery == 0 { harness.check(events: events) }
        }
        harness.check(events: events)
        #expect(harness.problems.isEmpty, "\(harness.problems.prefix(5))", sourceLocation: sourceLocation)
        return harness
    }
}

