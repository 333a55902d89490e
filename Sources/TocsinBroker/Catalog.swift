import Synchronization
import TocsinCore
import TocsinStore

/// The broker's in-memory view of streams and compiled channels, refreshed from the store on
/// every change made through this broker. Read on hot paths without suspension.
final class Catalog: Sendable {
    private struct State {
        var streams: [String: StreamInfo] = [:]
        var channels: [String: CompiledChannel] = [:]
        var datasets: [String: DatasetDefinition] = [:]
        /// Stored channels that did not compile, as last reported (name -> definition JSON).
        var skipped: [String: String] = [:]
        /// Bumped by every change made through this broker (`put`, `remove…`).
        var generation = 0
    }

    private let state = Mutex(State())

    /// Replaces the catalog. A stored channel that no longer compiles against its stream (it
    /// was stored under older rules) is left out; the ones not reported by an earlier load with
    /// the same definition are returned, so each is logged once. Everything else serves.
    ///
    /// With `unchangedSince` (a `generation` read before the store was read), nothing is replaced
    /// and nil is returned when this broker changed a definition meanwhile: the store's answer
    /// may predate that change, and applying it would hide the definition until the next reload.
    @discardableResult
    func load(
        streams: [StreamInfo], channels: [ChannelDefinition], datasets: [DatasetDefinition] = [], unchangedSince: Int? = nil
    ) -> [(definition: ChannelDefinition, error: TocsinError)]? {
        var compiled: [String: CompiledChannel] = [:]
        var failed: [(definition: ChannelDefinition, error: TocsinError)] = []
        let byName = Dictionary(streams.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let datasetsByName = Dictionary(datasets.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for definition in channels {
            guard let stream = byName[definition.stream] else { continue }
            do {
                compiled[definition.name] = try ChannelCompiler.compile(definition, schema: stream.definition.schema, datasets: datasetsByName)
            } catch {
                failed.append((definition, error))
            }
        }
        return state.withLock { s in
            if let unchangedSince, s.generation != unchangedSince { return nil }
            s.streams = byName
            s.channels = compiled
            s.datasets = datasetsByName
            let previous = s.skipped
            s.skipped = Dictionary(failed.map { ($0.definition.name, $0.definition.json.serialized) }, uniquingKeysWith: { a, _ in a })
            return failed.filter { previous[$0.definition.name] != $0.definition.json.serialized }
        }
    }

    /// Changes made through this broker so far (see `load(…unchangedSince:)`).
    var generation: Int { state.withLock { $0.generation } }

    func stream(_ name: String) -> StreamInfo? { state.withLock { $0.streams[name] } }
    func channel(_ name: String) -> CompiledChannel? { state.withLock { $0.channels[name] } }
    var streams: [StreamInfo] { state.withLock { Array($0.streams.values) } }
    var channels: [CompiledChannel] { state.withLock { Array($0.channels.values) } }

    func dataset(_ name: String) -> DatasetDefinition? { state.withLock { $0.datasets[name] } }
    /// Every dataset, by name: what channels' `enrich` clauses compile against.
    var datasetsByName: [String: DatasetDefinition] { state.withLock { $0.datasets } }

    func put(dataset: DatasetDefinition) {
        state.withLock { s in
            s.datasets[dataset.name] = dataset
            s.generation += 1
        }
    }

    func removeDataset(_ name: String) {
        state.withLock { s in
            _ = s.datasets.removeValue(forKey: name)
            s.generation += 1
        }
    }

    /// The dataset's definition, or an `unknown_dataset` error.
    func requireDataset(_ name: String) throws(TocsinError) -> DatasetDefinition {
        guard let d = dataset(name) else {
            throw TocsinError(.unknownDataset, "no dataset named '\(name.prefix(130))'")
        }
        return d
    }

    func put(stream: StreamInfo) {
        state.withLock { s in
            s.streams[stream.name] = stream
            s.generation += 1
        }
    }

    func removeStream(_ name: String) {
        state.withLock { s in
            _ = s.streams.removeValue(forKey: name)
            s.generation += 1
        }
    }

    func put(channel: CompiledChannel) {
        state.withLock { s in
            s.channels[channel.name] = channel
            s.generation += 1
        }
    }

    func removeChannel(_ name: String) {
        state.withLock { s in
            _ = s.channels.removeValue(forKey: name)
            s.generation += 1
        }
    }

    /// The stream's schema, or an `unknown_stream` error.
    func requireStream(_ name: String) throws(TocsinError) -> StreamInfo {
        guard let s = stream(name) else {
            throw TocsinError(.unknownStream, "no stream named '\(name)'")
        }
        return s
    }

    func requireChannel(_ name: String) throws(TocsinError) -> CompiledChannel {
        guard let c = channel(name) else {
            throw TocsinError(.unknownChannel, "no channel named '\(name)'")
        }
        return c
    }
}
