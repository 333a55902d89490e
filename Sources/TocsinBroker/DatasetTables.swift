import Logging
import ServiceLifecycle
import Synchronization
import TocsinCore
import TocsinStore

/// The datasets this broker's channels enrich from, in memory (`DatasetTable`, with its
/// indexes), each kept current by following the dataset's change stream, and the service that
/// runs those followers.
///
/// A table is loaded on first use (`ensure`, which a subscription to an enriching channel
/// awaits before it attaches): the records are read in pages, then the change stream is
/// followed from the first page's version. Pages read later may already hold some of the
/// changes after that version; applying those changes again in order leaves each key with its
/// last write, so the table is exact once the follower reaches the stream's end. From then on
/// the table's version is the seq of the last change it applied: a notification enriched from
/// it names exactly which writes it reflects.
///
/// A follower starts over (a fresh load, served by the old table meanwhile) when the change
/// stream gets a new epoch (the dataset was deleted and defined again, or redefined), when a
/// change does not read under the definition it loaded, or when changes it had not applied
/// were deleted by retention (it lagged more than a day). It ends when the dataset is gone.
final class DatasetTables: Service, Sendable {
    private struct Entry {
        var definition: DatasetDefinition
        /// nil until first loaded.
        var table: DatasetTable?
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    /// Records read per page while loading.
    static let pageSize = 10_000
    /// Changes applied per step of a follower (one lock hold).
    static let changesPerStep = 1_000

    private let store: any Store
    private let catalog: Catalog
    private let logger: Logger
    private let state = Mutex<[String: Entry]>([:])
    private let waiterIDs = Atomic<Int>(0)
    /// Told, outside the lock, which keys of a dataset changed once its table holds the change
    /// (`BoundSubscriptions.changed`).
    private let listener = Mutex<(@Sendable (_ dataset: String, _ keys: [Value]) -> Void)?>(nil)

    func onChanges(_ listener: @escaping @Sendable (_ dataset: String, _ keys: [Value]) -> Void) {
        self.listener.withLock { $0 = listener }
    }

    private func tell(_ dataset: String, _ keys: [Value]) {
        guard !keys.isEmpty, let listener = listener.withLock({ $0 }) else { return }
        listener(dataset, keys)
    }
    private let starts = AsyncStream.makeStream(of: String.self)

    init(store: any Store, catalog: Catalog, logger: Logger) {
        self.store = store
        self.catalog = catalog
        self.logger = logger
    }

    /// Returns once the tables of `datasets` are loaded (starting their followers on first
    /// use), or once `limit` passed: a store out of reach must not hold a subscribe forever
    /// (its notifications then say `"version": null` until the table is loaded).
    func ensure(_ datasets: [DatasetDefinition], within limit: Duration) async {
        guard !datasets.isEmpty else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for d in datasets { await self.ensure(d) } }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Returns once the dataset's table is loaded (or the task is cancelled), starting its
    /// follower on first use.
    func ensure(_ definition: DatasetDefinition) async {
        let start = state.withLock { s -> Bool in
            guard s[definition.name] == nil else { return false }
            s[definition.name] = Entry(definition: definition)
            return true
        }
        if start { starts.continuation.yield(definition.name) }
        let waiter = waiterIDs.add(1, ordering: .relaxed).newValue
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    guard let entry = s[definition.name], entry.table == nil, !Task.isCancelled else { return true }
                    s[definition.name]!.waiters[waiter] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { s in s[definition.name]?.waiters.removeValue(forKey: waiter) }?.resume()
        }
    }

    /// Runs `body` on the dataset's table under its lock (it must be brief and must not block),
    /// or returns nil if the table is not loaded.
    func read<R: Sendable>(_ name: String, _ body: (DatasetTable) -> R) -> R? {
        state.withLock { s -> R? in
            guard let table = s[name]?.table else { return nil }
            return body(table)
        }
    }

    func run() async {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for await name in self.starts.stream {
                    group.addTask { await self.follow(name) }
                }
            }
        }
        // Nobody waits past shutdown.
        let waiters = state.withLock { s in s.values.flatMap(\.waiters.values) }
        for w in waiters { w.resume() }
    }

    // MARK: Following

    /// Why a follower starts over.
    private enum Restart: Error {
        case reload
        case gone
    }

    private func follow(_ name: String) async {
        var retry = StoreRetry("the table of a dataset")
        while !Task.isCancelled {
            guard let definition = catalog.dataset(name) ?? state.withLock({ $0[name]?.definition }) else { break }
            do {
                try await loadAndFollow(definition)
            } catch Restart.gone {
                break
            } catch Restart.reload {
                continue
            } catch {
                await retry.failed(error, logger: logger, metadata: ["dataset": "\(name)"])
                continue
            }
        }
        let waiters = state.withLock { s in s.removeValue(forKey: name)?.waiters.values.map { $0 } ?? [] }
        for w in waiters { w.resume() }
    }

    private func loadAndFollow(_ definition: DatasetDefinition) async throws {
        let streamName = definition.changeStreamName
        let changeSchema = definition.changeStream.schema
        guard let info = try await store.stream(named: streamName) else { throw Restart.gone }
        var table = DatasetTable(definition: definition)
        var after: String?
        var from: Int64?
        while true {
            let page = try await store.readDataset(definition.name, afterKey: after, limit: Self.pageSize)
            if from == nil { from = page.version }
            for row in page.records {
                guard let record = try? definition.schema.record(from: JSONValue.parse(row.body)) else { throw Restart.reload }
                table.apply([.upsert(record)], version: from)
            }
            guard page.records.count == Self.pageSize, let last = page.records.last else { break }
            after = last.key
        }
        var position = from ?? 0
        let epoch = info.epoch
        let changes = store.changes
        var published = false
        while !Task.isCancelled {
            if published { await changes.wait(stream: streamName, after: position, epoch: epoch) }
            if Task.isCancelled { return }
            if let known = changes.epoch(of: streamName), known != epoch { throw Restart.reload }
            if let current = catalog.dataset(definition.name), current != definition { throw Restart.reload }
            var caughtUp = false
            while !caughtUp {
                let events: [StoredEvent]
                if let recent = changes.recentEvents(stream: streamName, epoch: epoch, after: position, limit: Self.changesPerStep) {
                    events = recent
                } else {
                    events = try await store.readEvents(stream: streamName, after: position, limit: Self.changesPerStep)
                }
                if let first = events.first, first.seq != position + 1 {
                    // Changes this table had not applied are gone (retention): load again.
                    throw Restart.reload
                }
                var writes: [(DatasetWrite, Int64)] = []
                writes.reserveCapacity(events.count)
                for event in events {
                    guard let record = try? changeSchema.record(from: JSONValue.parse(event.json)),
                        let write = definition.write(fromChange: record)
                    else { throw Restart.reload }
                    writes.append((write, event.seq))
                }
                if let last = events.last { position = last.seq }
                if published {
                    // In place, under the lock readers take: no copy of the table.
                    let applied = state.withLock { s -> Bool in
                        guard s[definition.name]?.table != nil else { return false }
                        s[definition.name]!.table!.apply(writes.map(\.0), version: position)
                        return true
                    }
                    guard applied else { throw Restart.gone }
                    tell(definition.name, writes.map { w in
                        switch w.0 {
                        case .upsert(let record): record[definition.keySlot]
                        case .delete(let key): key
                        }
                    })
                } else {
                    table.apply(writes.map(\.0), version: position)
                }
                caughtUp = events.count < Self.changesPerStep
            }
            if !published {
                // The stream may have been recreated while the records were read.
                if let now = try await store.stream(named: streamName), now.epoch != epoch { throw Restart.reload }
                let keys = Array(table.records.keys)
                publish(table, definition: definition)
                // The shared table is the only copy from now on, so it is changed in place.
                table = DatasetTable(definition: definition)
                // A reload may have changed any record (the first load finds nobody bound yet).
                tell(definition.name, keys)
                published = true
            }
        }
    }

    /// The first complete table of a load: it replaces what was served, and waiters go on.
    private func publish(_ table: DatasetTable, definition: DatasetDefinition) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            var entry = s[definition.name] ?? Entry(definition: definition)
            entry.definition = definition
            entry.table = table
            let waiters = Array(entry.waiters.values)
            entry.waiters = [:]
            s[definition.name] = entry
            return waiters
        }
        for w in waiters { w.resume() }
        logger.debug("loaded a dataset's table", metadata: ["dataset": "\(definition.name)", "version": "\(table.version)", "records": "\(table.count)"])
    }
}
