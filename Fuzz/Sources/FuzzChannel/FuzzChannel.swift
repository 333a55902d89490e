// libFuzzer target: the channel language (lexer, parser, type checker, compiler, planner).
// Input: either a channel definition body (`PUT /v1/channels/c`, starting with `{`), compiled
// against the fixed stream below; or, otherwise, a bare `where` clause with one parameter of
// every type declared.
// Properties: never crashes; refusals are invalid_channel; a channel that compiles evaluates on
// sample events without crashing, and its plan (index condition and residual) agrees with its
// full predicate on every sample.
import TocsinCore

/// A stream with one field of every type, some optional (as in the language tests).
let schema = try! StreamSchema(fields: [
    FieldSpec(name: "s", type: .string), FieldSpec(name: "i", type: .int), FieldSpec(name: "d", type: .double),
    FieldSpec(name: "b", type: .bool), FieldSpec(name: "t", type: .time), FieldSpec(name: "g", type: .geo),
    FieldSpec(name: "l", type: .stringList),
    FieldSpec(name: "os", type: .string, optional: true), FieldSpec(name: "oi", type: .int, optional: true),
    FieldSpec(name: "od", type: .double, optional: true), FieldSpec(name: "ob", type: .bool, optional: true),
    FieldSpec(name: "ot", type: .time, optional: true), FieldSpec(name: "og", type: .geo, optional: true),
    FieldSpec(name: "ol", type: .stringList, optional: true),
    // The example stream's names, so that docs/channels.md's clauses type-check as written.
    FieldSpec(name: "kind", type: .string), FieldSpec(name: "severity", type: .int),
    FieldSpec(name: "location", type: .geo), FieldSpec(name: "area", type: .string),
    FieldSpec(name: "description", type: .string, optional: true), FieldSpec(name: "time", type: .time),
])

let params: [ChannelParameter] = [
    ChannelParameter(name: "s", type: .string), ChannelParameter(name: "i", type: .int),
    ChannelParameter(name: "d", type: .double), ChannelParameter(name: "b", type: .bool),
    ChannelParameter(name: "t", type: .time), ChannelParameter(name: "g", type: .geo),
    ChannelParameter(name: "l", type: .stringList),
    ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
    ChannelParameter(name: "radiusKm", type: .double), ChannelParameter(name: "minSeverity", type: .int),
    ChannelParameter(name: "kind", type: .string), ChannelParameter(name: "area", type: .string),
]

let now: Int64 = 1_800_000_000_000

/// Sample values for a parameter of each type, a few per type (edges included).
func samples(_ type: FieldType) -> [JSONValue] {
    switch type {
    case .string: ["fire", "", "flood"]
    case .int: [3, 0, -1, .int(Int64.max), .int(Int64.min)]
    case .double: [2.5, 0, -90, 1e300, -1e-300]
    case .bool: [true, false]
    case .time: [.int(now - 60_000), "2027-01-15T08:00:00Z", 0, 253_402_300_799_999]
    case .geo: [["lat": 52, "lon": 4], ["lat": -90, "lon": 180], ["lat": 90, "lon": -180]]
    case .stringList: [["fire", "flood"], [], ["x"]]
    }
}

/// Sample events: every field at its first, second, ... sample (optional fields absent in one).
let records: [Record] = (0..<5).map { k in
    var event: [String: JSONValue] = [:]
    for field in schema.fields {
        if field.optional && k == 0 { continue }
        let s = samples(field.type)
        event[field.name] = s[k % s.count]
    }
    return try! schema.record(from: .object(event))
}

func fuzzChannel(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let definition: ChannelDefinition
    if bytes.first == UInt8(ascii: "{") {
        guard let body = try? JSONValue.parse(bytes) else { return 0 }
        do {
            definition = try ChannelDefinition(name: "c", json: body)
        } catch {
            precondition(error.code == .invalidChannel, "definition refused with \(error.code), not invalid_channel")
            return 0
        }
    } else {
        let text = String(decoding: bytes, as: UTF8.self)
        definition = ChannelDefinition(name: "c", stream: "s", params: params, whereClause: text)
    }
    let channel: CompiledChannel
    do {
        channel = try ChannelCompiler.compile(definition, schema: schema)
    } catch {
        precondition(error.code == .invalidChannel, "where clause refused with \(error.code), not invalid_channel")
        return 0
    }
    // Bind parameter sets: declared defaults where there are, else samples (k-th of each type).
    for k in 0..<3 {
        var given: [String: JSONValue] = [:]
        for p in channel.definition.params where p.default == nil || k > 0 {
            let s = samples(p.type)
            given[p.name] = s[(k + p.name.utf8.count) % s.count]
        }
        let values: [Value]
        do {
            values = try channel.bind(params: given)
        } catch {
            precondition(error.code == .invalidParams, "bind refused with \(error.code), not invalid_params")
            continue
        }
        for record in records {
            let full = channel.predicate.evaluate(record, values, now)
            let planned = channel.plan.admits(record, params: values) && channel.residual.evaluate(record, values, now)
            precondition(
                planned == full,
                "plan \(channel.plan) disagrees with the predicate (\(full)) on \(definition.whereClause.prefix(300))")
        }
    }
    return 0
}
