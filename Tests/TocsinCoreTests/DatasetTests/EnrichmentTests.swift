import Testing

@testable import TocsinCore

/// Events with a kind, a severity and a location; a dataset `d` of shelters.
private let stream = try! StreamSchema(fields: [
    FieldSpec(name: "kind", type: .string), FieldSpec(name: "severity", type: .int), FieldSpec(name: "location", type: .geo),
])
private let params = [
    ChannelParameter(name: "r", type: .double), ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
]
private let shelters = try! DatasetDefinition(
    name: "d",
    schema: try! StreamSchema(fields: [
        FieldSpec(name: "id", type: .string), FieldSpec(name: "loc", type: .geo), FieldSpec(name: "open", type: .bool),
        FieldSpec(name: "capacity", type: .int, optional: true), FieldSpec(name: "kind", type: .string),
        FieldSpec(name: "name", type: .string),
    ]),
    key: "id", indexed: ["loc", "kind"])

private func compile(_ clause: EnrichClause) throws(TocsinError) -> CompiledEnrichment {
    try CompiledEnrichment(clause, stream: stream, params: params, dataset: shelters, what: "enrich[0]")
}

@Suite struct DatasetDefinitionTests {
    @Test(arguments: [
        (#"{"fields": [{"name": "id", "type": "string"}], "key": "id"}"#, nil),
        (#"{"fields": [{"name": "id", "type": "int"}, {"name": "p", "type": "geo"}], "key": "id", "index": ["p"]}"#, nil),
        (#"{"fields": [{"name": "id", "type": "string"}], "key": "nope"}"#, "key 'nope' is not a field"),
        (#"{"fields": [{"name": "id", "type": "double"}], "key": "id"}"#, "must be a required string or int"),
        (#"{"fields": [{"name": "id", "type": "string", "optional": true}], "key": "id"}"#, "must be a required string or int"),
        (#"{"fields": [{"name": "id", "type": "string"}, {"name": "t", "type": "time"}], "key": "id", "index": ["t"]}"#, "only geo"),
        (#"{"fields": [{"name": "id", "type": "string"}], "key": "id", "index": ["id", "id"]}"#, "indexed twice"),
        (#"{"fields": [{"name": "id", "type": "string"}], "key": "id", "index": ["x"]}"#, "not a field"),
        (#"{"fields": [{"name": "id", "type": "string"}], "key": "id", "extra": 1}"#, "unknown key 'extra'"),
        (#"{"fields": [], "key": "id"}"#, "at least one field"),
        (#"{"fields": [{"name": "a b", "type": "string"}], "key": "a b"}"#, "not an identifier"),
        (#"{"fields": [{"name": "id", "type": "string"}, {"name": "change", "type": "string"}], "key": "id"}"#, "'change' cannot be a field"),
        (#"[1]"#, "must be a JSON object"),
    ] as [(String, String?)])
    func definitions(body: String, error expected: String?) throws {
        let json = try JSONValue.parse(body)
        do {
            let d = try DatasetDefinition(name: "shelters", json: json)
            #expect(expected == nil, "accepted \(body)")
            #expect(try DatasetDefinition(name: "shelters", json: d.json) == d)
        } catch {
            #expect(error.code == .invalidDataset)
            #expect(error.message.contains(expected ?? "<accepted>"), "\(error.message)")
        }
    }

    @Test func namesAreIdentifiers() {
        for bad in ["my-set", "1st", "a.b", "", String(repeating: "x", count: 129)] {
            #expect(throws: TocsinError.self) { try DatasetDefinition(name: bad, json: .object(["fields": .array([]), "key": .string("id")])) }
        }
    }

    @Test func batchesAreValidatedBeforeAnythingIsApplied() throws {
        var table = DatasetTable(definition: shelters)
        let good = try JSONValue.parse(#"{"id": "a", "loc": {"lat": 1, "lon": 2}, "open": true, "kind": "fire", "name": "A"}"#)
        let bad = try JSONValue.parse(#"{"id": "b", "loc": {"lat": 91, "lon": 2}, "open": true, "kind": "fire", "name": "B"}"#)
        #expect(throws: TocsinError.self) { _ = try [good, bad].map { try table.write(from: $0) } }
        #expect(table.count == 0 && table.version == 0)
        _ = table.apply([try table.write(from: good)])
        #expect(table.version == 1 && table.count == 1)
        let changes = table.apply([try table.write(from: .object(["delete": .string("a")])), try table.write(from: .object(["delete": .string("zz")]))])
        #expect(table.version == 2 && table.count == 0)
        #expect(changes.map(\.record) == [nil, nil])
        // A key PostgreSQL cannot store is refused on every store, as a schema violation.
        for bad in [#"{"delete": "a\u0000b"}"#, #"{"id": "a\u0000b", "loc": {"lat": 1, "lon": 2}, "open": true, "kind": "fire", "name": "A"}"#] {
            #expect(throws: TocsinError.self) { _ = try table.write(from: try JSONValue.parse(bad)) }
        }
    }
}

@Suite struct EnrichClauseTests {
    @Test func qualifiedNamesOnlyInEnrichClauses() {
        #expect(throws: TocsinError.self) {
            try ChannelCompiler.compile(ChannelDefinition(name: "c", stream: "s", params: [], whereClause: "d.open"), schema: stream)
        }
    }

    @Test(arguments: [
        ("distance(d.loc, location) <= 20 && d.open", nil),
        ("$r >= distance(location, d.loc)", nil),
        ("d.kind == kind && d.open", nil),
        ("d.open", "must use an index of 'd'"),
        ("distance(d.loc, location) <= 20 || d.open", "must use an index"),
        ("d.name == kind", "must use an index"),  // name is not indexed
        ("distance(d.loc, d.loc) <= 20", "must use an index"),
        ("x.open && d.kind == kind", "unknown dataset 'x'"),
        ("d.nope == kind", "has no field 'nope'"),
        ("d.kind", "must be a condition"),
        ("d. == kind", "expected a field name after 'd.'"),
    ] as [(String, String?)])
    func whereClauses(text: String, error expected: String?) {
        do {
            _ = try compile(EnrichClause(from: "d", whereClause: text, limit: 3))
            #expect(expected == nil, "accepted \(text)")
        } catch {
            #expect(error.code == .invalidChannel)
            #expect(error.message.contains(expected ?? "<accepted>"), "\(error.message)")
        }
    }

    @Test func clauseJSON() throws {
        let json = try JSONValue.parse(
            #"{"from": "d", "where": "d.kind == kind", "orderBy": "d.name", "order": "desc", "limit": 3, "as": "near"}"#)
        let clause = try EnrichClause(json: json, what: "enrich[0]")
        #expect(clause.alias == "near" && clause.descending && clause.limit == 3)
        #expect(try EnrichClause(json: clause.json, what: "x") == clause)
        for bad in [#"{"from": "d", "where": "true", "limit": 0}"#, #"{"from": "d", "where": "true", "limit": 101}"#,
            #"{"from": "d", "where": "true", "limit": 1, "order": "up"}"#, #"{"from": "d", "where": "true", "limit": 1, "as": "a-b"}"#,
            #"{"from": "d", "limit": 1}"#, #"{"from": "d", "where": "true", "limit": 1, "bogus": 1}"#]
        {
            #expect(throws: TocsinError.self) { try EnrichClause(json: try JSONValue.parse(bad), what: "enrich[0]") }
        }
        #expect(throws: TocsinError.self) { try compile(EnrichClause(from: "d", whereClause: "d.kind == kind", orderBy: "d.open", limit: 1)) }
    }

    // MARK: Against brute force

    static let templates: [(where: String, orderBy: String?, descending: Bool)] = [
        ("distance(d.loc, location) <= $r && d.open", "distance(d.loc, location)", false),
        ("distance(location, d.loc) < $r", "d.capacity", true),
        ("d.kind == kind", "d.name", false),
        ("$r >= distance(d.loc, point($lat, $lon)) && (d.capacity == null || d.capacity >= severity)", "d.capacity * 2 - severity", false),
        ("d.open && 20 > distance(d.loc, location)", nil, false),
        // Nearest first, by the lookup's own distance: the ring search.
        ("distance(d.loc, point($lat, $lon)) <= $r", "distance(point($lat, $lon), d.loc)", false),
        ("d.kind == \"flood\" && d.capacity > severity", "d.name", true),
    ]

    /// Enrichment equals a scan of every record through the reference interpreter, over random
    /// datasets (points clustered in a city, on the antimeridian, at a pole, anywhere), random
    /// writes and deletes between events, random events and radii.
    @Test(arguments: 0..<40)
    func enrichmentEqualsBruteForce(seed: Int) throws {
        var rng = SplitMix(seed: seed &* 7919 &+ 17)
        func pick<T>(_ items: [T]) -> T { items.randomElement(using: &rng)! }
        func point() -> GeoPoint {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: GeoPoint(lat: 52 + Double.random(in: -0.5...0.5, using: &rng), lon: 4.9 + Double.random(in: -0.5...0.5, using: &rng))
            case 1: GeoPoint(lat: Double.random(in: -1...1, using: &rng), lon: pick([-1.0, 1.0]) * Double.random(in: 179.8...180, using: &rng))
            case 2: GeoPoint(lat: Double.random(in: 89.5...90, using: &rng), lon: Double.random(in: -180...180, using: &rng))
            default: GeoPoint(lat: Double.random(in: -90...90, using: &rng), lon: Double.random(in: -180...180, using: &rng))
            }
        }
        let kinds = ["fire", "flood", "quake"]
        func record(_ id: Int) -> Record {
            [.string("s\(id)"), .geo(point()), .bool(Bool.random(using: &rng)),
             Int.random(in: 0..<4, using: &rng) == 0 ? .null : .int(Int64.random(in: 0...5, using: &rng)),
             .string(pick(kinds)), .string(pick(["Alpha", "Beta", "Gamma", "Delta"]))]
        }
        var table = DatasetTable(definition: shelters)
        let size = pick([0, 1, 10, 200])
        _ = table.apply((0..<size).map { .upsert(record($0)) })
        let template = pick(EnrichClauseTests.templates)
        let clause = EnrichClause(from: "d", whereClause: template.where, orderBy: template.orderBy, descending: template.descending, limit: pick([1, 3, 100]))
        let compiled = try compile(clause)
        let whereExpr = try Parser.parse(template.where)
        let orderExpr = try template.orderBy.map { try Parser.parse($0) }
        for round in 0..<30 {
            if round % 3 == 0 {  // some writes between events: moves, new records, deletes
                var writes: [DatasetWrite] = []
                for _ in 0..<Int.random(in: 0...10, using: &rng) {
                    let id = Int.random(in: 0..<(size + 5), using: &rng)
                    writes.append(Bool.random(using: &rng) ? .upsert(record(id)) : .delete(key: .string("s\(id)")))
                }
                _ = table.apply(writes)
            }
            let centre = Int.random(in: 0..<3, using: &rng) == 0 ? table.records.values.randomElement(using: &rng).map { r -> GeoPoint in
                if case .geo(let g) = r[1] { return g }
                return point()
            } ?? point() : point()
            let event: Record = [.string(pick(kinds)), .int(Int64.random(in: 0...5, using: &rng)), .geo(centre)]
            let bound: [Value] = [.double(pick([0, 0.5, 5, 20, 300, 3000, 15000, 25000])), .double(centre.lat), .double(centre.lon)]
            let got = compiled.evaluate(record: event, params: bound, nowMillis: 0, table: table)

            var expected: [(key: String, order: OrderKey?, record: Record)] = []
            for (key, candidate) in table.records {
                let interpreter = Interpreter(
                    schema: stream, params: params, record: event, values: bound, nowMillis: 0, joined: ("d", shelters.schema, candidate))
                guard interpreter.matches(whereExpr) else { continue }
                let order: OrderKey? =
                    switch orderExpr.map({ interpreter.evaluate($0) }) {
                    case .string(let s): .text(s)
                    case let v?: v.numeric.flatMap { $0.isNaN ? nil : .number($0) }
                    case nil: nil
                    }
                guard case .string(let k) = key else { continue }
                expected.append((k, order, candidate))
            }
            expected.sort { a, b in
                switch (a.order, b.order) {
                case (let x?, let y?) where x != y: return template.descending ? y < x : x < y
                case (.some, nil): return true
                case (nil, .some): return false
                default: return a.key < b.key
                }
            }
            #expect(got.version == table.version)
            #expect(got.records == expected.prefix(clause.limit).map(\.record), "seed \(seed) round \(round) \(template.where) at \(centre)")
        }
    }
}

/// The ring search of "k nearest" clauses (`PointGrid.rings`) against the full search of the
/// same clause (an order that is the same distance written another way, so not a ring search):
/// dense points in a city, at the antimeridian and near a pole; many events; radii from 0.2 km
/// to 300 km; limits from 1 to 30; ties (points stacked on one spot) included.
@Suite struct RingSearchTests {
    @Test(arguments: 0..<6)
    func ringSearchEqualsFullSearch(seed: Int) throws {
        var rng = SplitMix(seed: UInt64(seed) &* 31_337 &+ 5)
        let (lat0, lon0): (Double, Double) = [(52.3, 4.8), (0.2, 179.9), (88.5, 10.0), (-33.9, 151.2)][seed % 4]
        var table = DatasetTable(definition: shelters)
        var writes: [DatasetWrite] = []
        for i in 0..<3_000 {
            var lon = lon0 + Double.random(in: -0.5...0.5, using: &rng)
            if lon > 180 { lon -= 360 }
            // Every tenth on one of a few spots: equal distances, decided by key.
            let spot = i % 10 == 0
            let point = spot ? GeoPoint(lat: lat0 + Double(i % 3) * 0.01, lon: lon0) : GeoPoint(lat: min(90, lat0 + Double.random(in: -0.4...0.4, using: &rng)), lon: lon)
            writes.append(.upsert([.string("s\(i)"), .geo(point), .bool(Bool.random(using: &rng)), .int(Int64(i % 7)), .string("fire"), .string("n\(i)")]))
        }
        table.apply(writes)
        for limit in [1, 3, 30] {
            let ring = try compile(EnrichClause(
                from: "d", whereClause: "distance(d.loc, point($lat, $lon)) <= $r && d.open", orderBy: "distance(point($lat, $lon), d.loc)", limit: limit))
            let full = try compile(EnrichClause(
                from: "d", whereClause: "distance(d.loc, point($lat, $lon)) <= $r && d.open", orderBy: "distance(point($lat, $lon), d.loc) + 0", limit: limit))
            #expect(ring.nearest && !full.nearest)
            for _ in 0..<100 {
                var lon = lon0 + Double.random(in: -0.6...0.6, using: &rng)
                if lon > 180 { lon -= 360 }
                let lat = min(90, lat0 + Double.random(in: -0.5...0.5, using: &rng))
                let r = [0.2, 1, 3, 10, 40, 300].randomElement(using: &rng)!
                let event: Record = [.string("fire"), .int(3), .geo(GeoPoint(lat: lat, lon: lon))]
                let bound: [Value] = [.double(r), .double(lat), .double(lon)]
                let a = ring.evaluate(record: event, params: bound, nowMillis: 0, table: table).records
                let b = full.evaluate(record: event, params: bound, nowMillis: 0, table: table).records
                #expect(a == b, "seed \(seed) limit \(limit) r \(r) at \(lat),\(lon)")
            }
        }
    }
}

@Suite struct DatasetCSVTests {
    static let definition = try! DatasetDefinition(
        name: "shelters",
        json: [
            "fields": [
                ["name": "id", "type": "string"], ["name": "location", "type": "geo"], ["name": "open", "type": "bool"],
                ["name": "capacity", "type": "int", "optional": true], ["name": "services", "type": "list<string>", "optional": true],
                ["name": "since", "type": "time", "optional": true],
            ],
            "key": "id",
        ])

    @Test func rowsBecomeRecords() throws {
        let text = "id,location.lat,location.lon,open,capacity,services,since\r\n"
            + "a,52.5,4.9,true,300,beds; water,2026-01-01T00:00:00Z\n"
            + "\"b, \"\"quoted\"\"\",1,2,false,,,1700000000000\n"
            + "\n"
            + "\"c\nd\",0,0,true,,,\n"
        let records = try DatasetCSV.records(text, definition: Self.definition)
        #expect(records.count == 3)
        #expect(records[0] == ["id": "a", "location": ["lat": 52.5, "lon": 4.9], "open": true, "capacity": 300, "services": ["beds", "water"], "since": "2026-01-01T00:00:00Z"])
        #expect(records[1] == ["id": "b, \"quoted\"", "location": ["lat": 1.0, "lon": 2.0], "open": false, "since": 1_700_000_000_000])
        #expect(records[2]["id"] == "c\nd")
    }

    @Test(arguments: [
        ("id,nope\na,1\n", "line 1: column 2 'nope' is not a field"),
        ("id,id\na,b\n", "line 1: column 'id' appears twice"),
        ("id,location.lat,location.lon,open\na,1,2\n", "line 2: 3 cells"),
        ("id,location.lat,location.lon,open\na,1,2,yes\n", "line 2: 'open' must be true or false"),
        ("id,location.lat,open\na,1,true\n", "line 2: 'location' needs both"),
        ("id,location.lat,location.lon,open,capacity\na,1,2,true,x\n", "line 2: 'capacity' must be an integer"),
        ("id,location.lat,location.lon,open\na,91,2,true\n", "line 2: field 'location' is out of range"),
        ("id,location.lat,location.lon\na,1,2\n", "line 2: missing required field 'open'"),
        ("id,location.lat,location.lon,open\n\"a,1,2,true\n", "a quoted cell is not closed"),
    ] as [(String, String)])
    func badRowsNameTheirLine(text: String, expected: String) {
        do {
            _ = try DatasetCSV.records(text, definition: Self.definition)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }
}
