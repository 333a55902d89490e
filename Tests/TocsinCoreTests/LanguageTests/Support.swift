import Testing

@testable import TocsinCore

/// The standard `emergencies` stream (the example the broker seeds).
let emergencies = ExampleDefinitions.emergencies.schema

/// A stream with one field of every type, some optional.
let everything = try! StreamSchema(fields: [
    FieldSpec(name: "s", type: .string),
    FieldSpec(name: "i", type: .int),
    FieldSpec(name: "d", type: .double),
    FieldSpec(name: "b", type: .bool),
    FieldSpec(name: "t", type: .time),
    FieldSpec(name: "g", type: .geo),
    FieldSpec(name: "l", type: .stringList),
    FieldSpec(name: "os", type: .string, optional: true),
    FieldSpec(name: "oi", type: .int, optional: true),
    FieldSpec(name: "od", type: .double, optional: true),
    FieldSpec(name: "ob", type: .bool, optional: true),
    FieldSpec(name: "ot", type: .time, optional: true),
    FieldSpec(name: "og", type: .geo, optional: true),
    FieldSpec(name: "ol", type: .stringList, optional: true),
])

let everythingParams: [ChannelParameter] = [
    ChannelParameter(name: "s", type: .string),
    ChannelParameter(name: "i", type: .int),
    ChannelParameter(name: "d", type: .double),
    ChannelParameter(name: "b", type: .bool),
    ChannelParameter(name: "t", type: .time),
    ChannelParameter(name: "g", type: .geo),
    ChannelParameter(name: "l", type: .stringList),
]

let now: Int64 = 1_800_000_000_000

/// A record of `everything`: optional fields absent unless given.
func everythingRecord(
    s: String = "fire", i: Int64 = 3, d: Double = 2.5, b: Bool = true, t: Int64 = now - 60_000,
    g: GeoPoint = GeoPoint(lat: 52, lon: 4), l: [String] = ["x", "y"], optional: [Value] = Array(repeating: .null, count: 7)
) -> Record {
    [.string(s), .int(i), .double(d), .bool(b), .time(t), .geo(g), .stringList(l)] + optional
}

let everythingValues: [Value] = [
    .string("fire"), .int(3), .double(2.5), .bool(true), .time(now - 3_600_000), .geo(GeoPoint(lat: 52, lon: 4)),
    .stringList(["fire", "flood"]),
]

func compile(
    _ whereClause: String, schema: StreamSchema = everything, params: [ChannelParameter] = everythingParams
) throws(TocsinError) -> CompiledChannel {
    try ChannelCompiler.compile(
        ChannelDefinition(name: "test", stream: "test", params: params, whereClause: whereClause), schema: schema)
}

/// Evaluates compiled and interpreted, checks they agree, and returns the verdict.
func evaluate(
    _ whereClause: String, _ record: Record = everythingRecord(), _ values: [Value] = everythingValues,
    schema: StreamSchema = everything, params: [ChannelParameter] = everythingParams,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) throws -> Bool {
    let channel = try compile(whereClause, schema: schema, params: params)
    let compiled = channel.predicate.evaluate(record, values, now)
    let interpreted = try ChannelCompiler.interpret(
        whereClause, schema: schema, params: params, record: record, values: values, nowMillis: now)
    #expect(compiled == interpreted, "compiled and interpreted disagree on \(whereClause)", sourceLocation: sourceLocation)
    let planned = channel.plan.admits(record, params: values) && channel.residual.evaluate(record, values, now)
    #expect(planned == compiled, "plan \(channel.plan) disagrees on \(whereClause)", sourceLocation: sourceLocation)
    return compiled
}

/// The message of the error compiling `whereClause`, or nil when it compiles.
func compileError(
    _ whereClause: String, schema: StreamSchema = everything, params: [ChannelParameter] = everythingParams
) -> String? {
    do {
        _ = try compile(whereClause, schema: schema, params: params)
        return nil
    } catch {
        #expect(error.code == .invalidChannel)
        return error.message
    }
}
