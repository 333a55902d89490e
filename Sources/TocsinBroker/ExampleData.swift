import TocsinCore
import TocsinStore

/// The ready-to-try example (`ExampleDefinitions`), created in an empty store.
public enum ExampleData {
    /// Creates the example if the store has no streams at all.
    public static func seed(_ store: any Store) async throws {
        guard try await store.streams().isEmpty else { return }
        let (info, _) = try await store.putStream(ExampleDefinitions.emergencies, recreate: false)
        for channel in ExampleDefinitions.channels {
            _ = try ChannelCompiler.compile(channel, schema: info.definition.schema)
            _ = try await store.putChannel(channel)
        }
    }
}
