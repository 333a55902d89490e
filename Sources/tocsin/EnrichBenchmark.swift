import Foundation
import TocsinCore

/// `tocsin bench enrich`: what an enrich clause costs per notification, in this process, on one
/// core: the three nearest open shelters within 20 km of an event, from 10^5 shelters spread
/// over a continent and over a country (the density decides how many candidates the grid
/// returns), and by equality on an indexed field.
enum EnrichBenchmark {
    static func run() throws {
        let stream = try StreamSchema(fields: [
            FieldSpec(name: "kind", type: .string), FieldSpec(name: "severity", type: .int), FieldSpec(name: "location", type: .geo),
        ])
        let dataset = try DatasetDefinition(
            name: "shelters",
            schema: try StreamSchema(fields: [
                FieldSpec(name: "id", type: .string), FieldSpec(name: "location", type: .geo), FieldSpec(name: "open", type: .bool),
                FieldSpec(name: "region", type: .string), FieldSpec(name: "capacity", type: .int),
            ]),
            key: "id", indexed: ["location", "region"])
        let nearest = EnrichClause(
            from: "shelters", whereClause: "distance(shelters.location, location) <= 20 && shelters.open",
            orderBy: "distance(shelters.location, location)", limit: 3)
        let sameRegion = EnrichClause(
            from: "shelters", whereClause: "shelters.region == kind && shelters.capacity >= severity", orderBy: "shelters.capacity",
            descending: true, limit: 3)
        let areas: [(name: String, lat: ClosedRange<Double>, lon: ClosedRange<Double>)] = [
            ("a continent (34°×50°, ~10^7 km²)", 36...70, -10...40),
            ("a country (8°×9°, ~4×10^5 km²)", 47...55, 6...15),
        ]
        var rng = SplitMix(seed: 42)
        for area in areas {
            var table = DatasetTable(definition: dataset)
            let count = 100_000
            let writes: [DatasetWrite] = (0..<count).map { i in
                .upsert([
                    .string("s\(i)"),
                    .geo(GeoPoint(lat: Double.random(in: area.lat, using: &rng), lon: Double.random(in: area.lon, using: &rng))),
                    .bool(i % 4 != 0), .string("r\(i % 1000)"), .int(Int64(i % 500)),
                ])
            }
            let load = ContinuousClock.now
            _ = table.apply(writes)
            let loaded = ContinuousClock.now - load
            let events: [Record] = (0..<20_000).map { i in
                [.string("r\(i % 1000)"), .int(Int64(i % 500)),
                 .geo(GeoPoint(lat: Double.random(in: area.lat, using: &rng), lon: Double.random(in: area.lon, using: &rng)))]
            }
            for (label, clause) in [("3 nearest open within 20 km", nearest), ("3 largest of the event's region (equality, 100 per key)", sameRegion)] {
                let compiled = try CompiledEnrichment(clause, stream: stream, params: [], dataset: dataset, what: "enrich[0]")
                var found = 0
                for event in events.prefix(2_000) { found &+= compiled.evaluate(record: event, params: [], nowMillis: 0, table: table).records.count }
                let start = ContinuousClock.now
                for event in events { found &+= compiled.evaluate(record: event, params: [], nowMillis: 0, table: table).records.count }
                let elapsed = ContinuousClock.now - start
                let perEvent = (Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12) / Double(events.count)
                print(String(format: "10^5 shelters over %@, %@: %.1f µs per notification (%.2f records attached on average)", area.name, label, perEvent,
                    Double(found) / Double(events.count + 2_000)))
            }
            print("  loading 10^5 records with both indexes: \(loaded)")
        }
    }
}
