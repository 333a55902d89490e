import PropertyBased
import Testing

@testable import TocsinCore

/// A random stream, channel parameters, and generators of values and well-typed expressions over them.
struct World {
    var rng: SplitMix
    let schema: StreamSchema
    let params: [ChannelParameter]

    static let strings = ["a", "b", "ab", "", "B"]

    init(seed: Int) {
        var rng = SplitMix(seed: seed)
        let types = FieldType.allCases
        var fields: [FieldSpec] = []
        for i in 0..<Int.random(in: 3...9, using: &rng) {
            fields.append(
                FieldSpec(name: "f\(i)", type: types.randomElement(using: &rng)!, optional: Int.random(in: 0..<3, using: &rng) == 0))
        }
        schema = try! StreamSchema(fields: fields)
        params = (0..<Int.random(in: 1...7, using: &rng)).map { ChannelParameter(name: "p\($0)", type: types.randomElement(using: &rng)!) }
        self.rng = rng
    }

    mutating func chance(_ n: Int) -> Bool { Int.random(in: 0..<n, using: &rng) == 0 }

    mutating func pick<T>(_ items: [T]) -> T { items.randomElement(using: &rng)! }

    // MARK: Values

    mutating func value(_ type: FieldType) -> Value {
        switch type {
        case .string: .string(pick(World.strings))
        case .int:
            .int(
                chance(12)
                    ? pick([.max, .min + 1, 9_007_199_254_740_993]) : (chance(4) ? pick([4, 52]) : Int64.random(in: -2...3, using: &rng)))
        case .double: .double(pick([-1.5, 0, 0.5, 2, 3, 2.0000001, 52, 4.25, 51.75]))
        case .bool: .bool(chance(2))
        case .time: .time(now + Int64.random(in: -4...4, using: &rng) * 1_800_000)
        case .geo:
            .geo(
                GeoPoint(
                    lat: 52 + Double(Int.random(in: -2...2, using: &rng)) * 0.25,
                    lon: 4 + Double(Int.random(in: -2...2, using: &rng)) * 0.25))
        case .stringList: .stringList((0..<Int.random(in: 0...3, using: &rng)).map { _ in pick(World.strings) })
        }
    }

    mutating func record() -> Record {
        schema.fields.map { field in field.optional && chance(3) ? .null : value(field.type) }
    }

    mutating func values() -> [Value] { params.map { value($0.type) } }

    // MARK: Expressions

    /// A field or parameter of `type`, if there is one.
    mutating func reference(_ type: FieldType, fieldsOnly: Bool = false) -> String? {
        var names = schema.fields.filter { $0.type == type }.map(\.name)
        if !fieldsOnly { names += params.filter { $0.type == type }.map { "$" + $0.name } }
        return names.isEmpty ? nil : pick(names)
    }

    mutating func literal(_ type: FieldType) -> String {
        switch value(type) {
        case .string(let s): "\"\(s)\""
        case .int(let v): String(v)
        case .double(let v): "\(v)"
        case .bool(let b): b ? "true" : "false"
        case .time: "(now() - \(Int.random(in: 0...3, using: &rng))h)"
        case .geo(let g): "point(\(g.lat), \(g.lon))"
        case .stringList(let l): "[" + l.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
        case .null: "null"
        }
    }

    /// An expression of `type`; `depth` bounds the nesting.
    mutating func expression(_ type: FieldType, depth: Int) -> String {
        if depth <= 0 || chance(3) {
            if !chance(4), let r = reference(type) { return r }
            return literal(type)
        }
        let d = depth - 1
        switch type {
        case .bool:
            return condition(depth: depth)
        case .int:
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: return "(\(expression(.int, depth: d)) \(pick(["+", "-", "*"])) \(expression(.int, depth: d)))"
            case 1: return "(-\(expression(.int, depth: d)))"
            case 2: return "len(\(expression(.stringList, depth: d)))"
            default: return literal(.int)
            }
        case .double:
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: return "(\(number(depth: d)) \(pick(["+", "-", "*", "/"])) \(number(depth: d)))"
            case 1: return "distance(\(expression(.geo, depth: d)), \(expression(.geo, depth: d)))"
            case 2: return "(-\(expression(.double, depth: d)))"
            default: return "(\(expression(.int, depth: d)) / \(expression(.int, depth: d)))"
            }
        case .string:
            return chance(2) ? "lower(\(expression(.string, depth: d)))" : literal(.string)
        case .time:
            let duration = pick(["1h", "30m", "90s", "500ms", "1d", "-1h", "0s"])
            switch Int.random(in: 0..<3, using: &rng) {
            case 0: return "(\(expression(.time, depth: d)) \(pick(["+", "-"])) \(duration))"
            case 1: return "(\(duration) + \(expression(.time, depth: d)))"
            default: return "now()"
            }
        case .geo:
            return "point(\(number(depth: d)), \(number(depth: d)))"
        case .stringList:
            return "[" + (0..<Int.random(in: 0...3, using: &rng)).map { _ in expression(.string, depth: d) }.joined(separator: ", ") + "]"
        }
    }

    mutating func number(depth: Int) -> String {
        expression(chance(2) ? .int : .double, depth: depth)
    }

    /// A boolean expression, often one of the shapes the planner indexes.
    mutating func condition(depth: Int) -> String {
        let d = depth - 1
        switch Int.random(in: 0..<16, using: &rng) {
        case 0: return "(\(condition(depth: d)) && \(condition(depth: d)))"
        case 1: return "(\(condition(depth: d)) || \(condition(depth: d)))"
        case 2: return "(!(\(condition(depth: d))))"
        case 3: return "(\(number(depth: d)) \(pick(["==", "!=", "<", "<=", ">", ">="])) \(number(depth: d)))"
        case 4: return "(\(expression(.time, depth: d)) \(pick(["==", "!=", "<", "<=", ">", ">="])) \(expression(.time, depth: d)))"
        case 5: return "(\(expression(.string, depth: d)) \(pick(["==", "!=", "<", ">="])) \(expression(.string, depth: d)))"
        case 6:
            let type = pick([FieldType.bool, .geo, .stringList])
            return "(\(expression(type, depth: d)) \(pick(["==", "!="])) \(expression(type, depth: d)))"
        case 7:
            let type = pick(FieldType.allCases)
            return chance(2) ? "(\(expression(type, depth: d)) \(pick(["==", "!="])) null)" : "(null == \(expression(type, depth: d)))"
        case 8: return "(\(expression(.string, depth: d)) in \(expression(.stringList, depth: d)))"
        case 9: return "contains(\(expression(.stringList, depth: d)), \(expression(.string, depth: d)))"
        case 10: return "startsWith(\(expression(.string, depth: d)), \(expression(.string, depth: d)))"
        default: return indexable().map { "(\($0))" } ?? expression(.bool, depth: 0)
        }
    }

    /// One of the conjunct shapes the planner turns into an index, when the schema allows it.
    mutating func indexable() -> String? {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:
            let type = pick([FieldType.string, .int, .bool])
            guard let f = reference(type, fieldsOnly: true), let p = params.filter({ $0.type == type }).randomElement(using: &rng) else {
                return nil
            }
            return chance(2) ? "\(f) == $\(p.name)" : "$\(p.name) == \(f)"
        case 1:
            guard let f = reference(.string, fieldsOnly: true), let p = params.first(where: { $0.type == .stringList }) else { return nil }
            return "\(f) in $\(p.name)"
        case 2:
            guard let f = reference(.geo, fieldsOnly: true) else { return nil }
            let numeric = params.filter { $0.type.isNumeric }.map { "$" + $0.name }
            guard !numeric.isEmpty else { return nil }
            let lat = pick(numeric)
            let lon = chance(2) ? pick(numeric) : pick(["4", "4.25", "-3"])
            let r = chance(3) ? pick(["0", "20", "27.8", "55.6"]) : pick(numeric)
            let point = chance(2) ? "point(\(lat), \(lon))" : "point(\(lon), \(lat))"
            let distance = chance(2) ? "distance(\(f), \(point))" : "distance(\(point), \(f))"
            return chance(2) ? "\(distance) \(pick(["<=", "<"])) \(r)" : "\(r) \(pick([">=", ">"])) \(distance)"
        default:
            return threshold()
        }
    }

    /// `field <cmp> $param` on a numeric or time field, either way round.
    mutating func threshold() -> String? {
        let type = pick([FieldType.int, .double, .time])
        guard let f = reference(type, fieldsOnly: true) else { return nil }
        let bounds = params.filter { type == .time ? $0.type == .time : $0.type.isNumeric }
        guard let p = bounds.randomElement(using: &rng) else { return nil }
        let op = pick(["<", "<=", ">", ">="])
        return chance(2) ? "\(f) \(op) $\(p.name)" : "$\(p.name) \(op) \(f)"
    }

    /// An indexable conjunct and a threshold, sometimes with a third condition: the shape of
    /// channels whose residual starts with (or is) a threshold.
    mutating func indexedWithThreshold() -> String {
        let parts = [indexable(), threshold(), chance(2) ? condition(depth: 2) : nil].compactMap { $0 }
        return parts.isEmpty ? whereClause() : parts.joined(separator: " && ")
    }

    /// A top-level `where` clause: a conjunction of conditions.
    mutating func whereClause() -> String {
        (0..<Int.random(in: 1...4, using: &rng)).map { _ in condition(depth: Int.random(in: 0...4, using: &rng)) }.joined(separator: " && ")
    }
}

@Suite struct PropertyTests {
    /// Compiled closures agree with the reference interpreter, and the planned form
    /// (index condition ∧ residual) agrees with the whole predicate.
    @Test func compiledMatchesInterpreterAndPlan() async {
        await propertyCheck(count: 300, input: Gen.int(in: 0...Int.max)) { seed in
            var world = World(seed: seed)
            for _ in 0..<15 {
                let text = world.whereClause()
                let channel: CompiledChannel
                do {
                    channel = try ChannelCompiler.compile(
                        ChannelDefinition(name: "c", stream: "s", params: world.params, whereClause: text), schema: world.schema)
                } catch {
                    Issue.record("generated clause does not compile: \(text): \(error)")
                    continue
                }
                for _ in 0..<6 {
                    let record = world.record()
                    let values = world.values()
                    let compiled = channel.predicate.evaluate(record, values, now)
                    let reference = try! ChannelCompiler.interpret(
                        text, schema: world.schema, params: world.params, record: record, values: values, nowMillis: now)
                    #expect(compiled == reference, "\(text) on \(record) with \(values)")
                    let planned = channel.plan.admits(record, params: values) && channel.residual.evaluate(record, values, now)
                    #expect(planned == compiled, "\(text) planned as \(channel.plan) on \(record) with \(values)")
                }
            }
        }
    }

    /// The printed tree parses back to the same tree.
    @Test func printParseRoundTrip() async {
        await propertyCheck(count: 200, input: Gen.int(in: 0...Int.max)) { seed in
            var world = World(seed: seed)
            let text = world.whereClause()
            let tree = try! ChannelCompiler.parse(text)
            let printed = tree.description
            #expect((try? ChannelCompiler.parse(printed).description) == printed, "\(text)")
        }
    }

    static let fragments = [
        "(", ")", "[", "]", ",", "$", "$p0", "\"", "'", "\\", "f0", "f1", "1", "2.5", ".", " ", "\n", "==", "!=", "<",
        "<=", ">", ">=", "&&", "||", "!", "-", "+", "*", "/", "in", "5m", "1h", "now()", "now(", "distance(", "point(",
        "contains(", "startsWith(", "len(", "true", "null", "é", "|", "&", "=", "\u{0}", "\t", "99999999999999999999", "x",
    ]

    /// Random and mutated input never crashes: it compiles (and then evaluates) or throws an
    /// invalid_channel error whose position lies inside the text.
    @Test func fuzzParserAndChecker() async {
        await propertyCheck(count: 3000, input: Gen.int(in: 0...Int.max)) { seed in
            var world = World(seed: seed)
            var text: String
            switch seed % 3 {
            case 0:
                text = (0..<Int.random(in: 0...12, using: &world.rng)).map { _ in world.pick(PropertyTests.fragments) }.joined()
            case 1:
                text = String(
                    decoding: (0..<Int.random(in: 0...20, using: &world.rng)).map { _ in UInt8.random(in: 0...127, using: &world.rng) },
                    as: UTF8.self)
            default:
                var scalars = Array(world.whereClause().unicodeScalars)
                for _ in 0..<Int.random(in: 1...3, using: &world.rng) where !scalars.isEmpty {
                    let i = Int.random(in: 0..<scalars.count, using: &world.rng)
                    if world.chance(2) {
                        scalars.remove(at: i)
                    } else {
                        scalars.insert(world.pick(Array("()[]$\"',.!&|=<>-+ 1a".unicodeScalars)), at: i)
                    }
                }
                text = String(String.UnicodeScalarView(scalars))
            }
            do throws(TocsinError) {
                let channel = try ChannelCompiler.compile(
                    ChannelDefinition(name: "c", stream: "s", params: world.params, whereClause: text), schema: world.schema)
                _ = channel.predicate.evaluate(world.record(), world.values(), now)
            } catch {
                #expect(error.code == .invalidChannel)
                #expect(PropertyTests.positionIsInside(error.message, text), "\(text.debugDescription): \(error.message)")
            }
        }
    }

    /// Whether the message starts with `at L:C: ` naming a place in `text` (or just past its end).
    static func positionIsInside(_ message: String, _ text: String) -> Bool {
        guard message.hasPrefix("at "), let colon = message.firstIndex(of: ":") else { return false }
        let rest = message[message.index(message.startIndex, offsetBy: 3)...]
        let parts = rest.split(separator: ":", maxSplits: 2)
        guard parts.count == 3, let line = Int(parts[0]), let column = Int(parts[1]), parts[2].hasPrefix(" "), colon < message.endIndex
        else { return false }
        let lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false)
        guard line >= 1, line <= lines.count, column >= 1 else { return false }
        return column <= lines[line - 1].count + 1
    }
}
