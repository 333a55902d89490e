import Testing

@testable import TocsinCore

@Suite struct TypeCheckTests {
    let emergencyParams = [
        ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
        ChannelParameter(name: "radiusKm", type: .double), ChannelParameter(name: "minSeverity", type: .int, default: .int(1)),
    ]

    @Test func standardChannelsCompile() throws {
        _ = try compile(
            "distance(location, point($lat, $lon)) <= $radiusKm && severity >= $minSeverity", schema: emergencies,
            params: emergencyParams)
        _ = try compile("kind == $kind", schema: emergencies, params: [ChannelParameter(name: "kind", type: .string)])
    }

    @Test(arguments: [
        ("s == 1", "at 1:3: cannot compare string with int using '=='"),
        ("i < \"x\"", "at 1:3: cannot compare int with string using '<'"),
        ("t >= 5", "at 1:3: cannot compare time with int using '>='"),
        ("b < true", "at 1:3: '<' cannot order values of type bool"),
        ("g == $g && g < $g", "at 1:14: '<' cannot order values of type geo"),
        ("nope == 1", "at 1:1: unknown field 'nope' (fields: s, i, d, b, t, g, l, os, oi, od, ob, ot, og, ol)"),
        ("s == $nope", "at 1:6: unknown parameter '$nope' (parameters: $s, $i, $d, $b, $t, $g, $l)"),
        ("i + 1", "at 1:3: the where clause must be a condition (bool), but it is int"),
        ("s", "at 1:1: the where clause must be a condition (bool), but it is string"),
        ("null", "at 1:1: the where clause must be a condition (bool), but it is null"),
        ("5m", "at 1:1: the where clause must be a condition (bool), but it is a duration"),
        ("distance(g) < 1", "at 1:1: distance takes 2 arguments, got 1"),
        ("now(1) > t", "at 1:1: now takes 0 arguments, got 1"),
        ("distance(g, s) < 1", "at 1:13: argument 2 of distance must be geo, found string"),
        ("distance(g, point(s, 1)) < 1", "at 1:19: argument 1 of point must be a number, found string"),
        ("contains(s, \"x\")", "at 1:10: argument 1 of contains must be list<string>, found string"),
        ("startsWith(s, 1)", "at 1:15: argument 2 of startsWith must be string, found int"),
        ("frobnicate(s)", "at 1:1: unknown function 'frobnicate' (functions: distance, point, contains, startsWith, now, len, lower)"),
        ("i && b", "at 1:1: '&&' needs a boolean, found int"),
        ("b || s", "at 1:6: '||' needs a boolean, found string"),
        ("!i", "at 1:2: '!' needs a boolean, found int"),
        ("-s == s", "at 1:1: unary '-' needs a number or a duration, found string"),
        ("s + s == s", "at 1:3: '+' cannot combine string and string (arithmetic needs numbers)"),
        ("t == now() * 1h", "at 1:12: '*' cannot combine time and a duration"),
        ("t > 1h - now()", "at 1:8: '-' cannot combine a duration and time"),
        ("i == 1h", "at 1:6: a duration can only be added to or subtracted from a time"),
        ("i < null", "at 1:5: null can only be compared with '==' or '!='"),
        ("i in [\"a\"]", "at 1:1: 'in' needs a string on the left, found int"),
        ("s in s", "at 1:6: 'in' needs a list of strings on the right"),
        ("s in [\"a\", 1]", "at 1:12: list items must be strings, found int"),
        ("i > $i &&\n  kind == 1", "at 2:3: unknown field 'kind'"),
        ("s == i_", "at 1:6: unknown field 'i_'"),
    ])
    func typeErrors(text: String, expected: String) {
        let message = compileError(text)
        #expect(message?.hasPrefix(expected) == true, "got \(message ?? "no error")")
    }

    @Test func hints() {
        #expect(
            compileError("kind == $kind", schema: emergencies, params: [])
                == "at 1:9: unknown parameter '$kind' (the channel declares no parameters); to use the field, write kind")
        #expect(
            compileError("x == 1", params: [ChannelParameter(name: "x", type: .int)])?.hasSuffix("; to use the parameter, write $x") == true
        )
        #expect(compileError("now > t")?.hasSuffix("; to call the function, write now(...)") == true)
        #expect(compileError("t > 5")?.contains("compare a time with a time") == true)
    }

    @Test func wellTyped() {
        for text in [
            "i == d", "d < i", "i + d * 2 > 1", "i / 2 == 1.5", "-i < -d", "t >= now() - 1h", "t < 1d + now()",
            "t > $t + -5m", "t == null", "null != og", "null == null", "g == $g", "l == $l", "b == $b",
            "s in [\"a\", os, $s]", "s in l", "os in $l", "contains(l, s)", "contains([\"a\"], \"a\")",
            "startsWith(s, \"f\")", "len(l) >= 2", "lower(s) == \"fire\"", "true", "!false",
            "distance(g, point(52, 4.5)) < 10", "distance(point(1, 2), point(3, 4)) > $d",
        ] {
            #expect(compileError(text) == nil, "\(text): \(compileError(text) ?? "")")
        }
    }
}
