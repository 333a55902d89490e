import Metrics
import Synchronization
import TocsinCore

/// Subscriptions whose parameters are bound to their client's record in a dataset
/// (`ParameterBinding`), by the record they follow. When a dataset table applies changes
/// (`DatasetTables`), every subscription bound to a changed record moves to the record's new
/// values: the dispatcher's machine swaps its interest in one step (`rebind`), so there is no
/// resubscribe and no gap. A record that is deleted, or loses the field, leaves the
/// subscription where it was.
///
/// Moves are made one at a time (`moving`): each reads the record from the table and moves the
/// subscription before the next one reads, so the last move always reflects the latest record.
/// An entry goes when its subscription is detached (its connection closed, or it was
/// unsubscribed): an entry holds its session, which must not outlive the connection. One
/// detached some other way (taken over by another connection) is dropped at its next move, or
/// when the same subscription registers again.
final class BoundSubscriptions: Sendable {
    struct Entry: Sendable {
        let subscription: LiveSubscription
        let dispatcher: StreamDispatcher
        /// The subscription's params as stored: literals and `{"bind": …}` values.
        let params: [String: JSONValue]
        let bindings: [ParameterBinding]
        let client: String
    }

    private struct Key: Hashable {
        var dataset: String
        var client: String
    }

    private let tables: DatasetTables
    private struct State {
        /// By the record they follow, then by subscription id.
        var byRecord: [Key: [String: Entry]] = [:]
        var byID: [String: Entry] = [:]
    }

    private let entries = Mutex(State())
    private let moving = Mutex(())
    /// Subscriptions moved because their record changed.
    private let movesMetric = Counter(label: "tocsin_bound_moves_total")

    /// Subscriptions followed now.
    var count: Int { entries.withLock { $0.byID.count } }

    init(tables: DatasetTables) {
        self.tables = tables
    }

    /// The subscriber's records in the datasets `bindings` name (nil where it has none, or the
    /// table is not loaded).
    func records(for bindings: [ParameterBinding], client: String) -> [String: Record] {
        var records: [String: Record] = [:]
        for dataset in Set(bindings.map(\.dataset)) {
            if let record = tables.read(dataset, { $0.record(key: .string(client)) }) ?? nil { records[dataset] = record }
        }
        return records
    }

    /// A subscription's parameter values now, its bound ones read from its records (loading
    /// the datasets' tables first if need be).
    func resolve(_ channel: CompiledChannel, params: [String: JSONValue], client: String, datasets: [String: DatasetDefinition]) async throws(TocsinError) -> [Value] {
        let bindings = try channel.bindings(params: params, datasets: datasets)
        guard !bindings.isEmpty else { return try channel.bind(params: params) }
        await tables.ensure(bindings.compactMap { datasets[$0.dataset] }, within: Subscriptions.datasetLoadWait)
        return try channel.bind(params: params, bindings: bindings, records: records(for: bindings, client: client), client: client)
    }

    /// Follows the subscription's records from now on; then moves it once, in case a record
    /// changed after its parameters were read.
    func register(_ entry: Entry) {
        entries.withLock { e in
            for dataset in Set(entry.bindings.map(\.dataset)) {
                e.byRecord[Key(dataset: dataset, client: entry.client), default: [:]][entry.subscription.id] = entry
            }
            e.byID[entry.subscription.id] = entry
        }
        _ = move(entry)
    }

    /// The subscription was detached from `session`: its records are no longer followed for it.
    func detached(_ id: String, session: Session) {
        guard let entry = entries.withLock({ $0.byID[id] }), entry.subscription.session === session else { return }
        forget(entry)
    }

    /// Records of `dataset` changed: every subscription bound to one of them moves.
    func changed(dataset: String, keys: some Sequence<Value>) {
        let affected = entries.withLock { e -> [Entry] in
            guard !e.byID.isEmpty else { return [] }
            var found: [Entry] = []
            for key in keys {
                guard case .string(let client) = key, let bound = e.byRecord[Key(dataset: dataset, client: client)] else { continue }
                found.append(contentsOf: bound.values)
            }
            return found
        }
        for entry in affected where move(entry) { movesMetric.increment() }
    }

    /// Reads the entry's records and moves its subscription there; true if it moved.
    private func move(_ entry: Entry) -> Bool {
        moving.withLock { _ -> Bool in
            let records = records(for: entry.bindings, client: entry.client)
            guard let params = try? entry.subscription.channel.bind(params: entry.params, bindings: entry.bindings, records: records, client: entry.client)
            else { return false }
            // A move decides no frames: `read` (no queue to drain under this lock).
            let outcome = entry.dispatcher.read { m -> (attached: Bool, moved: Bool) in
                let before = m.params(of: entry.subscription.id)
                let attached = m.rebind(entry.subscription.id, recipient: entry.subscription, params: params)
                return (attached, attached && before != params)
            }
            if !outcome.attached { forget(entry) }
            return outcome.moved
        }
    }

    private func forget(_ entry: Entry) {
        entries.withLock { e in
            for dataset in Set(entry.bindings.map(\.dataset)) {
                let key = Key(dataset: dataset, client: entry.client)
                // Only this attachment: the same id may have registered again since.
                if e.byRecord[key]?[entry.subscription.id]?.subscription === entry.subscription {
                    e.byRecord[key]?.removeValue(forKey: entry.subscription.id)
                }
                if e.byRecord[key]?.isEmpty == true { e.byRecord.removeValue(forKey: key) }
            }
            if e.byID[entry.subscription.id]?.subscription === entry.subscription { e.byID.removeValue(forKey: entry.subscription.id) }
        }
    }
}
