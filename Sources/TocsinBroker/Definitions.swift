import TocsinCore
import TocsinStore

/// Defining streams and channels: the store first, then the catalog and any live dispatcher.
/// One of the broker's parts (`Broker.definitions`).
struct Definitions: Sendable {
    let store: any Store
    let catalog: Catalog
    let tails: StreamTails

    func putStream(_ definition: StreamDefinition, recreate: Bool) async throws(TocsinError) -> (StreamInfo, PutOutcome) {
        if recreate {
            // Every channel on the stream must still type-check against the new fields.
            for channel in catalog.channels where channel.definition.stream == definition.name {
                do {
                    _ = try ChannelCompiler.compile(channel.definition, schema: definition.schema, datasets: catalog.datasetsByName)
                } catch {
                    throw TocsinError(
                        .conflict,
                        "channel '\(channel.name)' does not fit the new fields (\(error.message)); delete or redefine it first")
                }
            }
        }
        let result = try await storeCall("saving the stream") { try await store.putStream(definition, recreate: recreate) }
        catalog.put(stream: result.0)
        if result.1 == .recreated {
            for channel in catalog.channels where channel.definition.stream == definition.name {
                if let recompiled = try? ChannelCompiler.compile(channel.definition, schema: definition.schema, datasets: catalog.datasetsByName) {
                    catalog.put(channel: recompiled)
                }
            }
        }
        if result.1 == .updated { tails.existing(definition.name)?.updateSchema(result.0) }
        return result
    }

    func putChannel(_ definition: ChannelDefinition) async throws(TocsinError) -> (CompiledChannel, PutOutcome) {
        let stream = try catalog.requireStream(definition.stream)
        let compiled = try ChannelCompiler.compile(definition, schema: stream.definition.schema, datasets: catalog.datasetsByName)
        let outcome = try await storeCall("saving the channel") { try await store.putChannel(definition) }
        catalog.put(channel: compiled)
        return (compiled, outcome)
    }

    /// The dataset and its change stream (made or reshaped by the store in the same
    /// transaction). A redefinition that a channel's `enrich` clauses no longer compile
    /// against is refused; the channels that do are recompiled against it.
    func putDataset(_ definition: DatasetDefinition) async throws(TocsinError) -> PutOutcome {
        var datasets = catalog.datasetsByName
        datasets[definition.name] = definition
        var recompiled: [CompiledChannel] = []
        for channel in catalog.channels where channel.definition.enrich.contains(where: { $0.from == definition.name }) {
            guard let stream = catalog.stream(channel.definition.stream) else { continue }
            do {
                recompiled.append(try ChannelCompiler.compile(channel.definition, schema: stream.definition.schema, datasets: datasets))
            } catch {
                throw TocsinError(
                    .conflict, "channel '\(channel.name)' enriches from '\(definition.name)' and does not fit the new fields (\(error.message)); delete or redefine it first")
            }
        }
        let outcome = try await storeCall("saving the dataset") { try await store.putDataset(definition) }
        catalog.put(dataset: definition)
        for channel in recompiled { catalog.put(channel: channel) }
        if outcome != .unchanged, let changes = try await storeCall("reading the change stream", { try await store.stream(named: definition.changeStreamName) }) {
            catalog.put(stream: changes)
            // Followers of the change stream (tails, dataset tables) learn of a new epoch at once.
            store.changes.advance(stream: changes.name, epoch: changes.epoch, to: changes.lastSeq)
            if outcome == .updated { tails.existing(changes.name)?.updateSchema(changes) }
        }
        return outcome
    }

    /// Refused while a channel watches the dataset's change stream (it would lose its stream).
    func deleteDataset(_ name: String) async throws(TocsinError) {
        let changes = name + DatasetDefinition.changeStreamSuffix
        if let watcher = catalog.channels.first(where: { $0.definition.stream == changes }) {
            throw TocsinError(.conflict, "channel '\(watcher.name)' watches '\(changes)'; delete it before the dataset")
        }
        if let reader = catalog.channels.first(where: { $0.definition.enrich.contains { $0.from == name } }) {
            throw TocsinError(.conflict, "channel '\(reader.name)' enriches from '\(name)'; delete it before the dataset")
        }
        let deleted = try await storeCall("deleting the dataset") { try await store.deleteDataset(named: name) }
        catalog.removeDataset(name)
        catalog.removeStream(changes)
        guard deleted else { throw TocsinError(.unknownDataset, "no dataset named '\(name.prefix(130))'") }
    }

    func deleteChannel(_ name: String) async throws(TocsinError) {
        // A stored channel the catalog left out (its definition no longer loads) is deleted too.
        let channel = catalog.channel(name)
        let deleted = try await storeCall("deleting the channel") { try await store.deleteChannel(named: name) }
        guard let channel else {
            if deleted { return }
            throw TocsinError(.unknownChannel, "no channel named '\(name)'")
        }
        catalog.removeChannel(name)
        if let d = tails.existing(channel.definition.stream) {
            for subscription in d.detachAll(channel: name) {
                _ = subscription.session.removeSubscription(subscription.id)
                subscription.session.send(.unsubscribed(id: nil, subscription: subscription.id))
            }
        }
    }
}
