import Testing

@testable import TocsinCore

@Suite struct PlannerTests {
    // Fields of `everything`: s 0, i 1, d 2, b 3, t 4, g 5, l 6, os 7, oi 8, od 9, ob 10, ot 11, og 12, ol 13.
    // Params: $s 0, $i 1, $d 2, $b 3, $t 4, $g 5, $l 6, then the extras below.
    let params =
        everythingParams + [
            ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .int),
            ChannelParameter(name: "r", type: .double), ChannelParameter(name: "os", type: .string),
        ]

    func plan(_ text: String) throws -> IndexPlan {
        try compile(text, params: params).plan
    }

    @Test func equality() throws {
        #expect(try plan("s == $s") == .equality(field: 0, param: 0))
        #expect(try plan("$s == s") == .equality(field: 0, param: 0))
        #expect(try plan("i == $i") == .equality(field: 1, param: 1))
        #expect(try plan("b == $b") == .equality(field: 3, param: 3))
        #expect(try plan("os == $os") == .equality(field: 7, param: 10))
        #expect(try plan("$i == oi") == .equality(field: 8, param: 1))
        // Equality beats every other kind, wherever it is.
        #expect(try plan("i >= $i && distance(g, point($lat, $lon)) < $r && s in $l && b == $b") == .equality(field: 3, param: 3))
        // The first of several equalities wins.
        #expect(try plan("(i == $i && s == $s)") == .equality(field: 1, param: 1))
    }

    @Test func noEqualityAcrossTypes() throws {
        #expect(try plan("i == $d") == .scan)
        #expect(try plan("d == $d") == .scan)  // doubles are not hashed
        #expect(try plan("t == $t") == .scan)
        #expect(try plan("g == $g") == .scan)
        #expect(try plan("s != $s") == .scan)
        #expect(try plan("s == \"x\"") == .scan)  // constants do not tell subscriptions apart
        #expect(try plan("i == $i + 1") == .scan)
    }

    @Test func membership() throws {
        #expect(try plan("s in $l") == .membership(field: 0, param: 6))
        #expect(try plan("os in $l && i >= $i") == .membership(field: 7, param: 6))
        #expect(try plan("s in [\"a\"]") == .scan)
        #expect(try plan("s in l") == .scan)
        #expect(try plan("contains($l, s)") == .scan)
    }

    @Test func geoRadius() throws {
        let expected = IndexPlan.geoRadius(field: 5, lat: .param(7), lon: .param(8), radiusKm: .param(9), inclusive: true)
        #expect(try plan("distance(g, point($lat, $lon)) <= $r") == expected)
        #expect(try plan("distance(point($lat, $lon), g) <= $r") == expected)
        #expect(try plan("$r >= distance(g, point($lat, $lon))") == expected)
        #expect(try plan("i >= $i && distance(g, point($lat, $lon)) <= $r") == expected)
        #expect(
            try plan("distance(g, point($lat, $lon)) < $r")
                == .geoRadius(field: 5, lat: .param(7), lon: .param(8), radiusKm: .param(9), inclusive: false))
        #expect(
            try plan("$r > distance(og, point($lat, $lon))")
                == .geoRadius(field: 12, lat: .param(7), lon: .param(8), radiusKm: .param(9), inclusive: false))
        #expect(
            try plan("distance(g, point($lat, 4.5)) <= 10")
                == .geoRadius(field: 5, lat: .param(7), lon: .constant(4.5), radiusKm: .constant(10), inclusive: true))
        #expect(
            try plan("distance(g, point(-1, $i)) <= -2.5")
                == .geoRadius(field: 5, lat: .constant(-1), lon: .param(1), radiusKm: .constant(-2.5), inclusive: true))
        // Fallbacks: both coordinates constant, a computed radius, the wrong direction, equality.
        #expect(try plan("distance(g, point(52, 4)) <= $r") == .scan)
        #expect(try plan("distance(g, point($lat, $lon)) <= $r * 2") == .scan)
        #expect(try plan("distance(g, point($lat, $lon)) >= $r") == .scan)
        #expect(try plan("distance(g, point($lat, $lon)) == $r") == .scan)
        #expect(try plan("distance(g, $g) <= $r") == .scan)
        #expect(try plan("distance(g, point($lat + 1, $lon)) <= $r") == .scan)
        // Geo radius beats threshold.
        #expect(try plan("i >= $i && distance(g, point($lat, $lon)) <= $r") == expected)
    }

    /// On the boundary (distance exactly the radius) `<=` admits and `<` does not, in the plan as in the predicate.
    @Test func geoRadiusBoundary() throws {
        let inclusive = try compile("distance(g, point($lat, $lon)) <= $r", params: params)
        let strict = try compile("$r > distance(point($lat, $lon), g)", params: params)
        for (lat, lon) in [(52.0, 4), (51.5, 5), (-33.9, 151), (52.0001, 4)] {
            let record = everythingRecord(g: GeoPoint(lat: 52.37, lon: 4.89))
            let r = GeoPoint(lat: 52.37, lon: 4.89).distanceKm(to: GeoPoint(lat: lat, lon: Double(lon)))
            let values = everythingValues + [.double(lat), .int(Int64(lon)), .double(r), .string("")]
            for (channel, expected) in [(inclusive, true), (strict, false)] {
                #expect(channel.predicate.evaluate(record, values, now) == expected)
                #expect(channel.plan.admits(record, params: values) == expected)
                #expect(channel.residual.evaluate(record, values, now) == true)
            }
        }
    }

    @Test func threshold() throws {
        #expect(try plan("i >= $i") == .threshold(field: 1, comparison: .greaterOrEqual, bound: .param(1)))
        #expect(try plan("i > $d") == .threshold(field: 1, comparison: .greaterThan, bound: .param(2)))
        #expect(try plan("d <= $i") == .threshold(field: 2, comparison: .lessOrEqual, bound: .param(1)))
        #expect(try plan("d < $d") == .threshold(field: 2, comparison: .lessThan, bound: .param(2)))
        #expect(try plan("t >= $t") == .threshold(field: 4, comparison: .greaterOrEqual, bound: .param(4)))
        // Mirrored forms are normalised to `record[field] <cmp> bound`.
        #expect(try plan("$i <= i") == .threshold(field: 1, comparison: .greaterOrEqual, bound: .param(1)))
        #expect(try plan("$i < oi") == .threshold(field: 8, comparison: .greaterThan, bound: .param(1)))
        #expect(try plan("$t >= ot") == .threshold(field: 11, comparison: .lessOrEqual, bound: .param(4)))
        #expect(try plan("$d > d") == .threshold(field: 2, comparison: .lessThan, bound: .param(2)))
        // Fallbacks.
        #expect(try plan("i >= 3") == .scan)
        #expect(try plan("t >= now() - 1h") == .scan)
        #expect(try plan("i + 1 >= $i") == .scan)
        #expect(try plan("s >= $s") == .scan)
        #expect(try plan("!(i >= $i)") == .scan)
        #expect(try plan("i >= $i || s == $s") == .scan)
    }

    @Test func residual() throws {
        let channel = try compile("i >= $i && s == $s && startsWith(s, \"f\")", params: params)
        #expect(channel.plan == .equality(field: 0, param: 0))
        // The residual holds the other conjuncts, but not the indexed one.
        let other = everythingRecord(s: "flood")
        #expect(channel.residual.evaluate(other, everythingValues, now) == true)
        #expect(channel.predicate.evaluate(other, everythingValues, now) == false)
        #expect(channel.residual.evaluate(everythingRecord(s: "fire", i: 2), everythingValues, now) == false)

        let single = try compile("s == $s", params: params)
        #expect(single.residual.evaluate(other, everythingValues, now) == true)  // Predicate.always
    }

    @Test func residualThreshold() throws {
        func threshold(_ text: String) throws -> ResidualThreshold? { try compile(text, params: params).residualThreshold }
        // The first threshold conjunct the index leaves, either way round.
        #expect(try threshold("s == $s && i >= $i") == ResidualThreshold(field: 1, comparison: .greaterOrEqual, param: 1, isWholeResidual: true))
        #expect(try threshold("s == $s && $d > d") == ResidualThreshold(field: 2, comparison: .lessThan, param: 2, isWholeResidual: true))
        #expect(try threshold("s == $s && t <= $t") == ResidualThreshold(field: 4, comparison: .lessOrEqual, param: 4, isWholeResidual: true))
        #expect(
            try threshold("s == $s && startsWith(s, \"f\") && i < $i && d > $d")
                == ResidualThreshold(field: 1, comparison: .lessThan, param: 1, isWholeResidual: false))
        // None: no residual, none of that form, or the threshold is the index itself.
        #expect(try threshold("s == $s") == nil)
        #expect(try threshold("s == $s && i == 3") == nil)
        #expect(try threshold("s == $s && i >= 3") == nil)
        #expect(try threshold("i >= $i") == nil)
        #expect(try threshold("i >= $i || d < $d") == nil)
    }

    /// The example's channels (`ExampleDefinitions`), as the broker seeds them.
    @Test func emergencyChannels() throws {
        let near = try ChannelCompiler.compile(try #require(ExampleDefinitions.channel("EmergenciesNearMe")), schema: emergencies)
        #expect(near.plan == .geoRadius(field: 2, lat: .param(0), lon: .param(1), radiusKm: .param(2), inclusive: true))
        #expect(near.residualThreshold == ResidualThreshold(field: 1, comparison: .greaterOrEqual, param: 3, isWholeResidual: true))
        let values = try near.bind(params: ["lat": .double(52.37), "lon": .double(4.89), "radiusKm": .int(25)])
        #expect(values == [.double(52.37), .double(4.89), .double(25), .int(1)])
        let event = try emergencies.record(
            from: JSONValue.parse(
                #"{"kind": "fire", "severity": 2, "location": {"lat": 52.3, "lon": 4.8}, "area": "Amsterdam", "time": 1800000000000}"#))
        #expect(near.predicate.evaluate(event, values, now) == true)
        #expect(near.plan.admits(event, params: values) == true)
        #expect(near.residual.evaluate(event, values, now) == true)

        let ofKind = try ChannelCompiler.compile(try #require(ExampleDefinitions.channel("EmergenciesOfKind")), schema: emergencies)
        #expect(ofKind.plan == .equality(field: 0, param: 0))
        #expect(ofKind.predicate.evaluate(event, [.string("fire")], now) == true)
        #expect(ofKind.predicate.evaluate(event, [.string("flood")], now) == false)
    }
}
