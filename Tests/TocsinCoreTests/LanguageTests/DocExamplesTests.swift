import Testing

@testable import TocsinCore

/// The examples in docs/channels.md, so the documentation stays true.
@Suite struct DocExamplesTests {
    static let params = [
        ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
        ChannelParameter(name: "radiusKm", type: .double), ChannelParameter(name: "minSeverity", type: .int, default: .int(1)),
    ]

    @Test(arguments: [
        ("severity >=", "at 1:12: the expression ends too early; expected a value"),
        ("kind == \"fire", "at 1:9: unterminated string (a string ends with \" on the same line)"),
        ("severity = 3", "at 1:10: unexpected '='; use '==' to compare"),
        ("1 < severity < 5", "at 1:14: comparisons cannot be chained; combine them with '&&'"),
        ("kind == $", "at 1:9: expected a parameter name after '$'"),
        ("severity 2", "at 1:10: unexpected number 2 after a complete expression (missing an operator?)"),
        ("sevrity >= 2", "at 1:1: unknown field 'sevrity' (fields: kind, severity, location, area, description, time)"),
        ("severity >= $min", "at 1:13: unknown parameter '$min' (parameters: $lat, $lon, $radiusKm, $minSeverity)"),
        ("kind == 3", "at 1:6: cannot compare string with int using '=='"),
        (
            "time >= 5",
            "at 1:6: cannot compare time with int using '>=' (compare a time with a time, e.g. time >= now() - 1h or time >= $since)"
        ),
        ("severity + 1", "at 1:10: the where clause must be a condition (bool), but it is int"),
        ("distance(location) < 5", "at 1:1: distance takes 2 arguments, got 1: distance(geo, geo) -> double"),
        ("distance(location, area) < 5", "at 1:20: argument 2 of distance must be geo, found string: distance(geo, geo) -> double"),
        ("severity >= 1h", "at 1:13: a duration can only be added to or subtracted from a time, like now() - 1h"),
        ("description < null", "at 1:15: null can only be compared with '==' or '!='"),
    ])
    func errorMessages(text: String, message: String) {
        #expect(compileError(text, schema: emergencies, params: DocExamplesTests.params) == message)
    }

    @Test func indexExamples() throws {
        let params =
            DocExamplesTests.params + [
                ChannelParameter(name: "kinds", type: .stringList), ChannelParameter(name: "area", type: .string),
                ChannelParameter(name: "min", type: .int), ChannelParameter(name: "km", type: .double),
            ]
        func plan(_ text: String) throws -> IndexPlan {
            try compile(text, schema: emergencies, params: params).plan
        }
        #expect(try plan("kind in $kinds && area == \"north\"") == .membership(field: 0, param: 4))
        #expect(try plan("area == $area && severity >= 3 && time >= now() - 1h") == .equality(field: 3, param: 5))
        #expect(try plan("severity >= $min && description != null") == .threshold(field: 1, comparison: .greaterOrEqual, bound: .param(6)))
        #expect(try plan("distance(point(52.37, 4.89), location) < $km") == .scan)
        #expect(try plan("startsWith(lower(area), \"north\") || kind == \"flood\"") == .scan)
        #expect(try plan("kind == $area || kind == \"all\"") == .scan)
    }

    @Test func nullExamples() throws {
        let record: Record = [.string("fire"), .int(2), .geo(GeoPoint(lat: 52, lon: 4)), .string("north"), .null, .time(now)]
        for (text, expected) in [
            ("description == \"x\"", false), ("description != \"x\"", false), ("!(description == \"x\")", true),
            ("description == null", true), ("description != null && startsWith(description, \"A\")", false),
            ("startsWith(description, \"\")", false), ("description in [\"a\", \"b\"]", false),
            ("area in [description, \"north\"]", true), ("description == null || description != \"x\"", true),
        ] {
            #expect(try evaluate(text, record, [], schema: emergencies, params: []) == expected, "\(text)")
        }
    }
}
