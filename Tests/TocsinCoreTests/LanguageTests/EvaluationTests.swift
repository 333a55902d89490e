import Testing

@testable import TocsinCore

/// Semantics of each operator and function. `evaluate` also checks the compiled closures against
/// the reference interpreter and the planned form (index ∧ residual) against the whole predicate.
@Suite struct EvaluationTests {
    @Test func comparisons() throws {
        // i = 3, d = 2.5, s = "fire", $i = 3, $d = 2.5
        for (text, expected) in [
            ("i == 3", true), ("i != 3", false), ("i < 4", true), ("i <= 3", true), ("i > 3", false), ("i >= 3", true),
            ("3 == i", true), ("4 > i", true), ("i == $i", true), ("i < $i", false), ("$i >= i", true),
            ("d == 2.5", true), ("d < 3", true), ("d > i", false), ("i > d", true), ("i == 3.0", true), ("d == $d", true),
            ("s == \"fire\"", true), ("s != \"fire\"", false), ("s < \"g\"", true), ("s > \"fire\"", false), ("s == $s", true),
            ("b == true", true), ("b != $b", false), ("g == $g", true), ("l == [\"x\", \"y\"]", true), ("l != $l", true),
            ("t < now()", true), ("t >= now() - 1m", true), ("t > now() - 59s", false), ("t >= $t", true),
            ("t + 2m > now()", true), ("now() - 1s == now() - 1000ms", true),
        ] {
            #expect(try evaluate(text) == expected, "\(text)")
        }
    }

    @Test func bigIntegersCompareExactly() throws {
        let big: Int64 = 9_007_199_254_740_993  // 2^53 + 1: not representable as a double
        let record = everythingRecord(i: big)
        #expect(try evaluate("i == 9007199254740993", record) == true)
        #expect(try evaluate("i != 9007199254740992", record) == true)
        #expect(try evaluate("i > 9007199254740992", record) == true)
    }

    @Test func logic() throws {
        for (text, expected) in [
            ("true && true", true), ("true && false", false), ("false || true", true), ("false || false", false),
            ("!true", false), ("!false", true), ("!(i == 3)", false), ("i == 3 && s == \"fire\"", true),
            ("i == 4 || s == \"fire\"", true), ("b", true), ("!b", false), ("$b && b", true), ("!(b && !b)", true),
            ("i == 4 && s == \"fire\" || d > 2", true), ("i == 4 && (s == \"fire\" || d > 2)", false),
        ] {
            #expect(try evaluate(text) == expected, "\(text)")
        }
    }

    @Test func arithmetic() throws {
        for (text, expected) in [
            ("i + 1 == 4", true), ("i - 5 == -2", true), ("i * 2 == 6", true), ("i / 2 == 1.5", true),
            ("-i == -3", true), ("- -i == 3", true), ("d * 2 == 5", true), ("i + d == 5.5", true), ("1 + 2 * 3 == 7", true),
            ("(1 + 2) * 3 == 9", true), ("10 - 4 - 3 == 3", true), ("i / 0 > 1000000", true), ("0 / 0 == 0 / 0", false),
            ("0 / 0 != 0 / 0", true), ("$i * $d == 7.5", true),
            // Int overflow makes the value null, so comparisons with it are false.
            ("9223372036854775807 + 1 > 0", false), ("9223372036854775807 + 1 <= 0", false),
            ("9223372036854775807 * 2 != 0", false), ("-9223372036854775807 - 2 < 0", false),
            ("(9223372036854775807 + 1) == null", true), ("9223372036854775807 + 1.0 > 0", true),
        ] {
            #expect(try evaluate(text) == expected, "\(text)")
        }
    }

    @Test func timeArithmetic() throws {
        let recent = everythingRecord(t: now - 30 * 60_000)  // 30 minutes ago
        let old = everythingRecord(t: now - 2 * 3_600_000)  // 2 hours ago
        #expect(try evaluate("t >= now() - 1h", recent) == true)
        #expect(try evaluate("t >= now() - 1h", old) == false)
        #expect(try evaluate("t + 1h >= now()", recent) == true)
        #expect(try evaluate("1h + t >= now()", old) == false)
        #expect(try evaluate("t > now() - 30m", recent) == false)
        #expect(try evaluate("t >= now() - 30m", recent) == true)
        #expect(try evaluate("t >= now() + -1d", old) == true)
        #expect(try evaluate("t < now() - 500ms - 1s", recent) == true)
        // now() is the time passed in, not the clock.
        let channel = try compile("t >= now() - 1h")
        #expect(channel.predicate.evaluate(old, everythingValues, now - 3_600_000) == true)
        #expect(channel.predicate.evaluate(old, everythingValues, now) == false)
    }

    @Test func membershipAndFunctions() throws {
        for (text, expected) in [
            ("s in [\"fire\", \"flood\"]", true), ("s in [\"flood\"]", false), ("s in []", false), ("s in $l", true),
            ("\"x\" in l", true), ("s in l", false), ("s in [$s]", true),
            ("s in [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\", \"fire\"]", true),
            ("s in [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\", \"j\"]", false),
            ("contains(l, \"y\")", true), ("contains(l, s)", false), ("contains($l, s)", true),
            ("startsWith(s, \"fi\")", true), ("startsWith(s, \"\")", true), ("startsWith(s, \"fire!\")", false),
            ("startsWith(\"fire\", s)", true), ("len(l) == 2", true), ("len([]) == 0", true),
            ("lower(\"FiRe\") == s", true),
            ("distance(g, point(52, 4)) == 0", true), ("distance(g, point(52, 5)) < 70", true),
            ("distance(g, point(52, 5)) > 68", true), ("distance(point(52, 5), g) == distance(g, point(52, 5))", true),
            ("distance(g, $g) <= 0", true), ("distance(g, point($d, $i)) > 5000", true),
        ] {
            #expect(try evaluate(text) == expected, "\(text)")
        }
    }

    @Test func distanceUsesGeoPointDistanceKm() throws {
        let a = GeoPoint(lat: 52.37, lon: 4.89)
        let b = GeoPoint(lat: 48.85, lon: 2.35)
        let km = a.distanceKm(to: b)
        let record = everythingRecord(g: a)
        #expect(try evaluate("distance(g, point(48.85, 2.35)) <= \(km)", record) == true)
        #expect(try evaluate("distance(g, point(48.85, 2.35)) < \(km)", record) == false)
        #expect(try evaluate("distance(point(48.85, 2.35), g) <= \(km)", record) == true)
    }

    /// Null: any comparison or function involving null is false, except `== null` / `!= null`; `!` of false is true.
    @Test func nulls() throws {
        for (text, expected) in [
            ("os == null", true), ("os != null", false), ("null == os", true), ("oi == null", true), ("s == null", false),
            ("s != null", true), ("null == null", true), ("null != null", false),
            ("os == \"x\"", false), ("os != \"x\"", false), ("!(os == \"x\")", true), ("oi < 1", false), ("oi >= 1", false),
            ("oi == oi", false), ("oi + 1 == null", true), ("oi + 1 > 0", false), ("od * 0 == 0", false),
            ("ob", false), ("!ob", true), ("ob == false", false), ("ob != true", false), ("ob || true", true),
            ("ot < now()", false), ("ot + 1h == null", true), ("og == $g", false), ("distance(og, $g) < 1", false),
            ("distance(og, $g) == null", true), ("os in [\"x\"]", false), ("s in ol", false), ("contains(ol, s)", false),
            ("startsWith(os, \"\")", false), ("len(ol) == null", true), ("lower(os) == null", true),
            ("s in [os, \"fire\"]", true), ("\"\" in [os]", false), ("ol == null", true), ("og != null", false),
            ("(oi == 1) == null", false), ("distance(g, point(od, 1)) > 0", false),
        ] {
            #expect(try evaluate(text) == expected, "\(text)")
        }
        let present = everythingRecord(optional: [
            .string("x"), .int(1), .double(0.5), .bool(false), .time(now), .geo(GeoPoint(lat: 52, lon: 4)), .stringList(["fire"]),
        ])
        for (text, expected) in [
            ("os == \"x\"", true), ("os == null", false), ("oi < 2", true), ("ob == false", true), ("!ob", true),
            ("ot == now()", true), ("og == $g", true), ("s in ol", true), ("od * 0 == 0", true),
        ] {
            #expect(try evaluate(text, present) == expected, "\(text)")
        }
    }

    @Test func shortCircuit() throws {
        // The right side would be false anyway; what matters is that both forms agree and nothing traps.
        #expect(try evaluate("false && 9223372036854775807 + i > 0") == false)
        #expect(try evaluate("true || 9223372036854775807 + i > 0") == true)
    }
}
