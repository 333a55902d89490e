import Testing
import TocsinCore
@testable import TocsinBroker
@testable import TocsinStore

/// A catalog reload read from the store before this broker stored a definition must not hide
/// that definition (a subscribe right after `PUT /v1/channels/…` got `unknown_channel` under load).
@Suite struct CatalogReloadTests {
    @Test func aReloadOlderThanALocalChangeIsNotApplied() throws {
        let catalog = Catalog()
        let stream = StreamInfo(definition: ExampleDefinitions.emergencies, epoch: "e1", lastSeq: 0, firstSeq: 1, createdAtMillis: 0)
        catalog.load(streams: [stream], channels: [])
        let before = catalog.generation
        // The reload reads the store (no channel yet)…
        let readStreams = [stream]
        let readChannels: [ChannelDefinition] = []
        // …meanwhile this broker stores a channel and puts it in the catalog.
        let definition = try #require(ExampleDefinitions.channels.first { $0.stream == "emergencies" })
        catalog.put(channel: try ChannelCompiler.compile(definition, schema: stream.definition.schema, datasets: [:]))
        #expect(catalog.load(streams: readStreams, channels: readChannels, unchangedSince: before) == nil)
        #expect(catalog.channel(definition.name) != nil)
        // A reload read after the change applies.
        #expect(catalog.load(streams: readStreams, channels: [definition], unchangedSince: catalog.generation) != nil)
        #expect(catalog.channel(definition.name) != nil)
    }
}
