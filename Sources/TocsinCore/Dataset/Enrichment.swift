/// An `enrich` clause of a channel: joins each matching event with records of a dataset.
///
///     {"from": "shelters",
///      "where": "distance(shelters.location, location) <= 20 && shelters.open",
///      "orderBy": "distance(shelters.location, location)", "order": "asc",
///      "limit": 3, "as": "shelters"}
///
/// `where` reads the event's fields, the channel's parameters and the dataset's fields as
/// `<dataset>.<field>`; it must contain, as a top-level conjunct, an indexed lookup
/// (`EnrichPlan`). `orderBy` (optional) is a number, time or string expression; records are
/// sorted by it (nulls last), then by key, and the first `limit` kept.
public struct EnrichClause: Sendable, Hashable {
    public var from: String
    public var whereClause: String
    public var orderBy: String?
    public var descending: Bool
    public var limit: Int
    /// The name the records go under in the notification (default: the dataset's name).
    public var alias: String

    /// The most records one clause may attach to a notification.
    public static let maxLimit = 100
    /// The most enrich clauses a channel may declare.
    public static let maxClauses = 4

    public init(from: String, whereClause: String, orderBy: String? = nil, descending: Bool = false, limit: Int, alias: String? = nil) {
        self.from = from
        self.whereClause = whereClause
        self.orderBy = orderBy
        self.descending = descending
        self.limit = limit
        self.alias = alias ?? from
    }
}

extension EnrichClause {
    /// Reads one clause of a channel definition's `enrich` array (`what` names it in errors).
    public init(json: JSONValue, what: String) throws(TocsinError) {
        guard case .object(let o) = json else {
            throw TocsinError(.invalidChannel, "\(what) must be an object {\"from\", \"where\", \"orderBy\"?, \"order\"?, \"limit\", \"as\"?}")
        }
        for key in o.keys.sorted() where !["from", "where", "orderBy", "order", "limit", "as"].contains(key) {
            throw TocsinError(.invalidChannel, "unknown key '\(key.prefix(80))' in \(what) (expected from, where, orderBy, order, limit, as)")
        }
        guard let from = o["from"]?.stringValue else {
            throw TocsinError(.invalidChannel, "\(what).from must name a dataset")
        }
        guard let whereClause = o["where"]?.stringValue else {
            throw TocsinError(.invalidChannel, "\(what).where must be a condition that uses an index of '\(from.prefix(80))'")
        }
        var orderBy: String? = nil
        if let ob = o["orderBy"], ob != .null {
            guard let text = ob.stringValue else { throw TocsinError(.invalidChannel, "\(what).orderBy must be an expression (a string)") }
            orderBy = text
        }
        var descending = false
        if let order = o["order"], order != .null {
            guard let text = order.stringValue, text == "asc" || text == "desc" else {
                throw TocsinError(.invalidChannel, "\(what).order must be \"asc\" or \"desc\"")
            }
            descending = text == "desc"
        }
        guard let limit = o["limit"]?.intValue, limit >= 1, limit <= Int64(EnrichClause.maxLimit) else {
            throw TocsinError(.invalidChannel, "\(what).limit must be an integer from 1 to \(EnrichClause.maxLimit)")
        }
        var alias: String? = nil
        if let a = o["as"], a != .null {
            guard let text = a.stringValue, Identifier.isValid(text), text.utf8.count <= 128 else {
                throw TocsinError(.invalidChannel, "\(what).as must be an identifier")
            }
            alias = text
        }
        self.init(from: from, whereClause: whereClause, orderBy: orderBy, descending: descending, limit: Int(limit), alias: alias)
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "from": .string(from), "where": .string(whereClause), "limit": .int(Int64(limit)), "as": .string(alias),
        ]
        if let orderBy {
            o["orderBy"] = .string(orderBy)
            o["order"] = .string(descending ? "desc" : "asc")
        }
        return .object(o)
    }
}

/// How an enrich clause finds its candidate records: always through an index, never by scanning.
public enum EnrichPlan: Sendable, Hashable {
    /// `distance(<dataset>.<geo field>, <event geo>) <= <radius>` (or `<`), the field indexed.
    case radius(datasetSlot: Int)
    /// `<dataset>.<field> == <event value>`, the field indexed.
    case equality(datasetSlot: Int)
}

/// The records a clause attached to one event, and the dataset version they were read at.
public struct Enriched: Sendable, Hashable {
    public var alias: String
    public var version: Int64
    /// Keys and records, in the clause's order.
    public var records: [Record]
}

/// An enrich clause compiled against its channel's stream, parameters and dataset.
public struct CompiledEnrichment: Sendable {
    public let clause: EnrichClause
    public let dataset: DatasetDefinition
    public let plan: EnrichPlan
    private let eventFields: Int
    private let predicate: Eval<Bool>
    private let centre: Eval<GeoPoint?>?
    private let radius: Eval<Double?>?
    private let inclusive: Bool
    private let probe: Eval<Value>?
    private let order: Eval<OrderKey?>?
    /// The clause orders by the lookup's own distance, ascending ("the k nearest"): the grid is
    /// visited in rings outward, and the search stops once `limit` records are found nearer
    /// than anything in the next ring can be.
    let nearest: Bool
    /// `where` or `orderBy` calls `now()`.
    let readsClock: Bool

    /// Type-checks the clause; errors are `invalid_channel` naming `what` and the position.
    public init(
        _ clause: EnrichClause, stream: StreamSchema, params: [ChannelParameter], dataset: DatasetDefinition, what: String
    ) throws(TocsinError) {
        func located(_ e: TocsinError, _ part: String) -> TocsinError {
            TocsinError(.invalidChannel, "\(what).\(part) \(e.message)")
        }
        let checker = TypeChecker(schema: stream, params: params, joined: (dataset.name, dataset.schema))
        let typed: TypedExpr
        do {
            typed = try checker.check(try Parser.parse(clause.whereClause))
        } catch {
            throw located(error, "where")
        }
        guard typed.type == .bool else {
            throw TocsinError(.invalidChannel, "\(what).where must be a condition (bool), but it is \(typed.type)")
        }
        self.clause = clause
        self.dataset = dataset
        self.eventFields = stream.fields.count
        self.predicate = Compiler.test(typed)
        let n = stream.fields.count
        let found = Planner.splitConjuncts(typed).lazy.compactMap { CompiledEnrichment.lookup($0, eventFields: n, dataset: dataset) }.first
        guard let found else {
            let indexed = dataset.indexed.isEmpty ? "it has no indexed field" : "indexed: " + dataset.indexed.joined(separator: ", ")
            throw TocsinError(
                .invalidChannel,
                "\(what).where must use an index of '\(dataset.name)' in a top-level '&&' term: distance(\(dataset.name).<geo field>, <event point>) <= <radius>, or \(dataset.name).<field> == <event value> (\(indexed))"
            )
        }
        self.plan = found.plan
        switch found.plan {
        case .radius:
            centre = Compiler.geo(found.operand)
            radius = Compiler.double(found.radius!)
            probe = nil
        case .equality:
            centre = nil
            radius = nil
            probe = CompiledEnrichment.value(found.operand)
        }
        inclusive = found.inclusive
        var nearest = false
        var readsClock = typed.readsClock
        if let text = clause.orderBy {
            let typedOrder: TypedExpr
            do {
                typedOrder = try checker.check(try Parser.parse(text))
            } catch {
                throw located(error, "orderBy")
            }
            readsClock = readsClock || typedOrder.readsClock
            if !clause.descending, case .call(.distance, let o)? = Optional(typedOrder.node), case .call(.distance, let d)? = found.distance?.node {
                nearest = (o[0] == d[0] && o[1] == d[1]) || (o[0] == d[1] && o[1] == d[0])
            }
            switch typedOrder.type {
            case .int, .double:
                let f = Compiler.double(typedOrder)
                order = { r, p, now in f(r, p, now).flatMap { $0.isNaN ? nil : .number($0) } }
            case .time:
                let f = Compiler.time(typedOrder)
                order = { r, p, now in f(r, p, now).map { .number(Double($0)) } }
            case .string:
                let f = Compiler.string(typedOrder)
                order = { r, p, now in f(r, p, now).map { .text($0) } }
            default:
                throw TocsinError(.invalidChannel, "\(what).orderBy must be a number, time or string, but it is \(typedOrder.type)")
            }
        } else {
            order = nil
        }
        self.nearest = nearest
        self.readsClock = readsClock
    }

    /// The records of `table` the clause attaches to the event `record` with bound `params`.
    public func evaluate(record: Record, params: [Value], nowMillis: Int64, table: DatasetTable) -> Enriched {
        var joined = record
        joined.reserveCapacity(eventFields + dataset.schema.fields.count)
        let keySlot = dataset.keySlot
        let descending = clause.descending
        typealias Hit = (key: Value, order: OrderKey?, row: Int)
        func before(_ a: Hit, _ b: Hit) -> Bool {
            switch (a.order, b.order) {
            case (let x?, let y?) where x != y: return descending ? y < x : x < y
            case (.some, nil): return true
            case (nil, .some): return false
            default: return DatasetKeyOrder.less(a.key, b.key)
            }
        }
        // The first `limit` in order, kept sorted as candidates pass: no sort of every hit.
        let limit = clause.limit
        var hits: [Hit] = []
        hits.reserveCapacity(limit + 1)
        func consider(_ rows: [Int]) {
            for row in rows {
                let candidate = table.rows[row]
                joined.removeSubrange(eventFields...)
                joined.append(contentsOf: candidate)
                guard predicate(joined, params, nowMillis) else { continue }
                let hit: Hit = (candidate[keySlot], order?(joined, params, nowMillis), row)
                if hits.count == limit, !before(hit, hits[limit - 1]) { continue }
                var at = hits.count
                while at > 0, before(hit, hits[at - 1]) { at -= 1 }
                hits.insert(hit, at: at)
                if hits.count > limit { hits.removeLast() }
            }
        }
        var rows: [Int] = []
        switch plan {
        case .radius(let slot):
            guard let c = centre!(record, params, nowMillis), let r = radius!(record, params, nowMillis) else { break }
            if nearest {
                // Ring by ring outward; done once the limit is reached by records strictly
                // nearer than the next ring's nearest possible point (ties are still visited).
                table.rings(geoSlot: slot, near: c, radiusKm: r) { ring, nextRingKm in
                    consider(ring)
                    guard hits.count == limit, case .number(let kth)? = hits[limit - 1].order else { return true }
                    return kth >= nextRingKm
                }
            } else {
                table.candidates(geoSlot: slot, near: c, radiusKm: r, into: &rows)
            }
        case .equality(let slot):
            let v = probe!(record, params, nowMillis)
            if case .null = v {} else if let found = table.rows(slot: slot, equalTo: v) { rows.append(contentsOf: found) }
        }
        consider(rows)
        return Enriched(alias: clause.alias, version: table.version, records: hits.map { table.rows[$0.row] })
    }

    /// The indexed lookup a conjunct allows, if any.
    private static func lookup(_ e: TypedExpr, eventFields n: Int, dataset: DatasetDefinition)
        -> (plan: EnrichPlan, operand: TypedExpr, radius: TypedExpr?, inclusive: Bool, distance: TypedExpr?)?
    {
        func datasetSlot(_ e: TypedExpr) -> Int? {
            guard case .field(let slot) = e.node, slot >= n, dataset.indexed.contains(dataset.schema.fields[slot - n].name) else { return nil }
            return slot - n
        }
        func readsDataset(_ e: TypedExpr) -> Bool { e.slots.contains { $0 >= n } }
        guard case .compare(let op, let l, let r) = e.node else { return nil }
        switch op {
        case .equal:
            for (a, b) in [(l, r), (r, l)] {
                if let slot = datasetSlot(a), !readsDataset(b), a.type == b.type, dataset.schema.fields[slot].type != .geo {
                    return (.equality(datasetSlot: slot), b, nil, true, nil)
                }
            }
            return nil
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            // distance(...) <= r, or r >= distance(...)
            let (call, bound, strict): (TypedExpr, TypedExpr, Bool) =
                switch op {
                case .less: (l, r, true)
                case .lessOrEqual: (l, r, false)
                case .greater: (r, l, true)
                default: (r, l, false)
                }
            guard case .call(.distance, let args) = call.node, !readsDataset(bound) else { return nil }
            for (a, b) in [(args[0], args[1]), (args[1], args[0])] {
                if let slot = datasetSlot(a), !readsDataset(b) {
                    return (.radius(datasetSlot: slot), b, bound, !strict, call)
                }
            }
            return nil
        default:
            return nil
        }
    }

    private static func value(_ e: TypedExpr) -> Eval<Value> {
        switch e.type {
        case .string:
            let f = Compiler.string(e)
            return { r, p, n in f(r, p, n).map { .string($0) } ?? .null }
        case .int:
            let f = Compiler.int(e)
            return { r, p, n in f(r, p, n).map { .int($0) } ?? .null }
        default:
            let f = Compiler.bool(e)
            return { r, p, n in f(r, p, n).map { .bool($0) } ?? .null }
        }
    }
}

/// A sort key of `orderBy`.
enum OrderKey: Sendable, Hashable, Comparable {
    case number(Double)
    case text(String)
}

/// The order of dataset keys (ints before strings; each by value), the tie-break of `orderBy`.
enum DatasetKeyOrder {
    static func less(_ a: Value, _ b: Value) -> Bool {
        switch (a, b) {
        case (.int(let x), .int(let y)): x < y
        case (.string(let x), .string(let y)): x < y
        case (.int, _): true
        default: false
        }
    }
}

extension TypedExpr {
    /// Every record slot the expression reads.
    var slots: [Int] {
        switch node {
        case .field(let slot): [slot]
        case .constant, .duration, .param: []
        case .list(let items), .call(_, let items): items.flatMap(\.slots)
        case .not(let x), .negate(let x), .isNull(let x, _): x.slots
        case .and(let a, let b), .or(let a, let b), .arithmetic(_, let a, let b), .compare(_, let a, let b), .member(let a, let b):
            a.slots + b.slots
        }
    }
}
