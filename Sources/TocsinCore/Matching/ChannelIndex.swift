/// All interests (distinct parameter bindings) of one channel, indexed per its `IndexPlan`.
///
/// Subscriptions with equal parameters share one interest (reference counted), so matching
/// cost grows with distinct interests, not with subscribers. `match` asks the plan's index for
/// the candidates whose indexed conjunct holds — the index decides that conjunct exactly — and
/// checks `channel.residual` on them only. The result is exactly the interests for which
/// `channel.predicate` is true, provided the compiler's `predicate` agrees with the index
/// semantics documented on `IndexPlan`'s cases (see `KeyedIndex`, `GeoIndex`, `ThresholdIndex`).
///
/// A value type: keep one copy and mutate it in place (e.g. in the dictionary of the actor that
/// owns the channel's subscriptions). Copies share storage until one of them is mutated, which
/// then copies the whole index — cheap snapshots for readers, but not something to do per event.
public struct ChannelIndex: Sendable {
    public let channel: CompiledChannel
    private var interests = InterestTable()
    private var index: Index
    /// With `channel.residualThreshold`: each interest's bound (its parameter), by interest id.
    /// Dense, so checking a candidate is one load, not a walk through its params.
    private var thresholdBounds: [Value] = []

    private enum Index: Sendable {
        case keyed(KeyedIndex)
        case geo(GeoIndex)
        case threshold(ThresholdIndex)
        case scan
    }

    public init(channel: CompiledChannel) {
        self.channel = channel
        switch channel.plan {
        case .equality(let field, let param):
            index = .keyed(KeyedIndex(field: field, param: param, isMembership: false))
        case .membership(let field, let param):
            index = .keyed(KeyedIndex(field: field, param: param, isMembership: true))
        case .geoRadius(let field, let lat, let lon, let radiusKm, let inclusive):
            index = .geo(GeoIndex(field: field, lat: lat, lon: lon, radiusKm: radiusKm, inclusive: inclusive))
        case .threshold(let field, let comparison, let bound):
            index = .threshold(ThresholdIndex(field: field, comparison: comparison, bound: bound))
        case .scan:
            index = .scan
        }
    }

    /// Distinct live interests.
    public var count: Int { interests.count }

    /// Adds one reference to the interest with these params (in the channel's declared order,
    /// as `CompiledChannel.bind` returns them), creating it when it is new.
    public mutating func acquire(params: [Value]) -> InterestID {
        let (id, isNew) = interests.acquire(params)
        if isNew {
            indexInsert(id, params: params)
            if let threshold = channel.residualThreshold {
                let bound = threshold.param < params.count ? params[threshold.param] : .null
                if Int(id) < thresholdBounds.count {
                    thresholdBounds[Int(id)] = bound
                } else {
                    thresholdBounds.append(bound)
                }
            }
        }
        return InterestID(rawValue: id)
    }

    /// Drops one reference; returns true when that was the last one and the interest was
    /// removed (its id may then be reused). An id that is not live is ignored (returns false).
    @discardableResult
    public mutating func release(_ id: InterestID) -> Bool {
        guard let params = interests.release(id.rawValue) else { return false }
        indexRemove(id.rawValue, params: params)
        return true
    }

    /// Whether `id` names a live interest.
    public func contains(_ id: InterestID) -> Bool { interests.isLive(id.rawValue) }

    /// The bound params of a live interest.
    public func params(of id: InterestID) -> [Value] {
        precondition(interests.isLive(id.rawValue), "\(id) is not a live interest of channel '\(channel.name)'")
        return interests.params[Int(id.rawValue)]
    }

    /// Appends every interest whose bound params make the channel's where-clause true for the
    /// event. Does not clear `result`; allocation-free once `result` has grown to its working size.
    ///
    /// The index yields the candidates whose indexed conjunct holds; every `blockSize` of them,
    /// `ResidualFilter` checks the residual threshold and the residual and compacts the block
    /// in place.
    public func match(_ record: Record, nowMillis: Int64, into result: inout [InterestID]) {
        thresholdBounds.withUnsafeBufferPointer { bounds in
            let threshold = channel.residualThreshold.map { t in
                ResidualFilter.Threshold(
                    comparison: t.comparison, value: t.field >= 0 && t.field < record.count ? record[t.field] : .null,
                    bounds: bounds, isWholeResidual: t.isWholeResidual)
            }
            var filter = ResidualFilter(
                residual: channel.residual.evaluate, threshold: threshold, params: interests.params, record: record,
                nowMillis: nowMillis, start: result.count)
            forEachCandidate(in: record) { filter.append($0, to: &result) }
            filter.finish(&result)
        }
    }

    /// Calls `body` with every interest whose indexed conjunct holds for the record.
    @inline(__always)
    private func forEachCandidate(in record: Record, _ body: (Int32) -> Void) {
        switch index {
        case .keyed(let keyed):
            keyed.withCandidates(for: record) { entries in
                for e in entries { body(e.id) }
            }
        case .geo(let geo):
            geo.forEachMatch(in: record, body)
        case .threshold(let threshold):
            threshold.forEachCandidateRun(for: record) { run in
                for e in run { body(e.id) }
            }
        case .scan:
            for i in 0..<interests.capacity where interests.isLive(Int32(i)) {
                body(Int32(i))
            }
        }
    }

    // Each mutation takes the payload out of `index` first, so its storage stays uniquely
    // referenced and is mutated in place instead of copied.

    private mutating func indexInsert(_ id: Int32, params: [Value]) {
        switch index {
        case .keyed(var i):
            index = .scan
            i.insert(id, params: params)
            index = .keyed(i)
        case .geo(var i):
            index = .scan
            i.insert(id, params: params)
            index = .geo(i)
        case .threshold(var i):
            index = .scan
            i.insert(id, params: params)
            index = .threshold(i)
        case .scan:
            break
        }
    }

    private mutating func indexRemove(_ id: Int32, params: [Value]) {
        switch index {
        case .keyed(var i):
            index = .scan
            i.remove(id)
            index = .keyed(i)
        case .geo(var i):
            index = .scan
            i.remove(id)
            index = .geo(i)
        case .threshold(var i):
            index = .scan
            i.remove(id, params: params)
            index = .threshold(i)
        case .scan:
            break
        }
    }
}
