import PropertyBased
import Testing

@testable import TocsinCore

@Suite struct TimeFormatTests {
    let stream = try! StreamSchema(fields: [FieldSpec(name: "time", type: .time)])

    @Test func formatsAsBeforeForInRangeValues() {
        #expect(TimeFormat.format(0) == "1970-01-01T00:00:00Z")
        #expect(TimeFormat.format(1_795_435_200_000) == "2026-11-23T12:00:00Z")
        #expect(TimeFormat.format(1_795_435_200_123) == "2026-11-23T12:00:00.123Z")
        #expect(TimeFormat.format(1_795_435_200_120) == "2026-11-23T12:00:00.120Z")
        #expect(TimeFormat.format(-1) == "1969-12-31T23:59:59.999Z")
        #expect(TimeFormat.format(TimeFormat.minMillis) == "0001-01-01T00:00:00Z")
        #expect(TimeFormat.format(TimeFormat.maxMillis) == "9999-12-31T23:59:59.999Z")
        #expect(TimeFormat.format(951_782_400_000) == "2000-02-29T00:00:00Z")
    }

    /// Never traps, also far outside the supported range (values no client can get in).
    @Test func formatsEveryInt64() {
        #expect(TimeFormat.format(TimeFormat.minMillis - 1) == "0000-12-31T23:59:59.999Z")
        #expect(TimeFormat.format(TimeFormat.maxMillis + 1) == "+10000-01-01T00:00:00Z")
        #expect(TimeFormat.format(.max).hasPrefix("+292278994-"))
        #expect(TimeFormat.format(.min).hasPrefix("-292275055-"))
    }

    @Test func parsesExactly() {
        #expect(TimeFormat.parse("2026-11-23T12:00:00.123Z") == 1_795_435_200_123)
        #expect(TimeFormat.parse("2026-11-23T12:00:00.1Z") == 1_795_435_200_100)
        #expect(TimeFormat.parse("2026-11-23t12:00:00.12z") == 1_795_435_200_120)
        #expect(TimeFormat.parse("2026-11-23T13:30:00.999+01:30") == 1_795_435_200_999)
        #expect(TimeFormat.parse("2026-11-23T10:00:00-02:00") == 1_795_435_200_000)
        // Digits after the millisecond are dropped, not rounded.
        #expect(TimeFormat.parse("2026-11-23T12:00:00.123999999Z") == 1_795_435_200_123)
        #expect(TimeFormat.parse("1969-12-31T23:59:59.9995Z") == -1)
        #expect(TimeFormat.parse("0001-01-01T00:00:00Z") == TimeFormat.minMillis)
        #expect(TimeFormat.parse("9999-12-31T23:59:59.999Z") == TimeFormat.maxMillis)
        #expect(TimeFormat.parse("2024-02-29T00:00:00Z") == 1_709_164_800_000)
        // In range once the offset is applied.
        #expect(TimeFormat.parse("0000-12-31T23:00:00-01:00") == TimeFormat.minMillis)
    }

    @Test func refusesImpossibleAndOutOfRangeTimes() {
        let impossible = [
            "2026-02-29T00:00:00Z", "2026-02-30T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
            "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-12-31T23:59:60Z", "2100-02-29T00:00:00Z",
            "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+01:60",
        ]
        for text in impossible {
            guard case .failure(.impossible) = TimeFormat.check(text) else {
                Issue.record("\(text) should be impossible, got \(TimeFormat.check(text))")
                continue
            }
        }
        for text in ["0000-12-31T23:59:59.999Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-01:00", "0000-01-01T00:00:00Z"] {
            #expect(TimeFormat.check(text) == .failure(.outOfRange), "\(text)")
        }
        let malformed = [
            "", "2026-11-23", "2026-11-23T12:00Z", "2026-11-23T12:00:00", "2026-11-23 12:00:00Z", "2026-11-23T12:00:00.Z",
            "2026-11-23T12:00:00.1234567890Z", "2026-11-23T12:00:00+0100", "2026-11-23T12:00:00+01", "-0001-01-01T00:00:00Z",
            "+2026-11-23T12:00:00Z", "2026-11-23T12:00:00ZZ", "2026-1-23T12:00:00Z", "２０２６-11-23T12:00:00Z", "2026-11-23T12:00:00.12a3Z",
        ]
        for text in malformed {
            #expect(TimeFormat.check(text) == .failure(.malformed), "\(text)")
        }
    }

    @Test func eventsOutsideTheRangeAreSchemaViolations() throws {
        for json: JSONValue in [
            .string("0000-12-31T23:59:59Z"), .string("2026-02-30T00:00:00Z"), .int(TimeFormat.minMillis - 1), .int(TimeFormat.maxMillis + 1),
            .int(.min), .int(.max), .double(-8.9e15), .double(1.5),
        ] {
            let error = #expect(throws: TocsinError.self) { _ = try stream.record(from: .object(["time": json])) }
            #expect(error?.code == .schemaViolation, "\(json)")
        }
        let out = #expect(throws: TocsinError.self) { _ = try stream.record(from: .object(["time": .string("0000-12-31T23:59:59Z")])) }
        #expect(out?.message.contains("0001-01-01T00:00:00Z") == true)
        let feb30 = #expect(throws: TocsinError.self) { _ = try stream.record(from: .object(["time": .string("2026-02-30T00:00:00Z")])) }
        #expect(feb30?.message.contains("day 30 of month 2") == true)
        #expect(try stream.record(from: .object(["time": .int(TimeFormat.minMillis)])) == [.time(TimeFormat.minMillis)])
        #expect(try stream.record(from: .object(["time": .double(-1000)])) == [.time(-1000)])
    }

    /// Random milliseconds across the whole range: formatted, parsed back and through an
    /// event's canonical JSON, they come back exactly.
    @Test func randomTimesRoundTripExactly() async {
        await propertyCheck(count: 2000, input: Gen.int64(in: TimeFormat.supportedRange)) { ms in
            let text = TimeFormat.format(ms)
            #expect(TimeFormat.parse(text) == ms, "\(ms) -> \(text)")
            let record = try stream.record(from: .object(["time": .string(text)]))
            #expect(record == [.time(ms)])
            #expect(try stream.record(from: .object(["time": .int(ms)])) == [.time(ms)])
            let stored = stream.json(of: record)
            #expect(try stream.record(from: JSONValue.parse(stored)) == [.time(ms)], "\(stored)")
        }
    }

    /// Times compare in channel expressions (compiled, and through the channel's index) exactly
    /// as their integer milliseconds do, across the whole range and one millisecond apart.
    @Test func randomTimesCompareInExpressionsAsTheirIntegers() async throws {
        let params = [ChannelParameter(name: "t", type: .time)]
        var channels: [(String, CompiledChannel, (Int64, Int64) -> Bool)] = []
        let comparisons: [(String, (Int64, Int64) -> Bool)] = [
            ("<", (<)), ("<=", (<=)), (">", (>)), (">=", (>=)), ("==", (==)), ("!=", (!=)),
        ]
        for (op, holds) in comparisons {
            let definition = ChannelDefinition(name: "c", stream: "s", params: params, whereClause: "time \(op) $t")
            channels.append((op, try ChannelCompiler.compile(definition, schema: stream), holds))
        }
        let gen = Gen.int64(in: TimeFormat.supportedRange)
        await propertyCheck(count: 500, input: gen, gen, Gen.int64(in: -3...3), Gen.bool) { a, other, delta, asString in
            // Half the time one millisecond or so apart, half the time anywhere.
            let b = delta == 3 || delta == -3 ? other : min(max(a + delta, TimeFormat.minMillis), TimeFormat.maxMillis)
            let event = try stream.record(from: .object(["time": asString ? .string(TimeFormat.format(a)) : .int(a)]))
            for (op, channel, holds) in channels {
                let values = try channel.bind(params: ["t": asString ? .string(TimeFormat.format(b)) : .int(b)])
                #expect(channel.predicate.evaluate(event, values, 0) == holds(a, b), "\(a) \(op) \(b)")
                var index = ChannelIndex(channel: channel)
                let interest = index.acquire(params: values)
                var matched: [InterestID] = []
                index.match(event, nowMillis: 0, into: &matched)
                #expect(matched.contains(interest) == holds(a, b), "indexed: \(a) \(op) \(b)")
            }
        }
    }
}
