import Synchronization
import TocsinCore
import TocsinStore

/// The broker's in-memory view of streams and compiled channels, refreshed from the store on
/// every change made through this broker. Read on hot paths without suspension.
final class Catalog: Sendable {
    private struct State {
        var streams: [String: StreamInfo] = [:]
        var channels: [String: CompiledChannel] = [:]
    }

    private let state = Mutex(State())

    func load(streams: [StreamInfo], channels: [ChannelDefinition]) throws(TocsinError) {
        var compiled: [String: CompiledChannel] = [:]
        let byName = Dictionary(uniqueKeysWithValues: streams.map { ($0.name, $0) })
        for definition in channels {
            guard let stream = byName[definition.stream] else { continue }
            compiled[definition.name] = try ChannelCompiler.compile(definition, schema: stream.definition.schema)
        }
        state.withLock { s in
            s.streams = byName
            s.channels = compiled
        }
    }

    func stream(_ name: String) -> StreamInfo? { state.withLock { $0.streams[name] } }
    func channel(_ name: String) -> CompiledChannel? { state.withLock { $0.channels[name] } }
    var streams: [StreamInfo] { state.withLock { Array($0.streams.values) } }
    var channels: [CompiledChannel] { state.withLock { Array($0.channels.values) } }

    func put(stream: StreamInfo) {
        state.withLock { $0.streams[stream.name] = stream }
    }

    func put(channel: CompiledChannel) {
        state.withLock { $0.channels[channel.name] = channel }
    }

    func removeChannel(_ name: String) {
        state.withLock { _ = $0.channels.removeValue(forKey: name) }
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
