import Foundation
import TocsinCore
import TocsinStore

/// A replay to run after the reply that announced the subscription has been queued: one
/// subscription's, or (for a `hello`) a batch of them.
struct PendingReplay: Sendable {
    private struct One: Sendable {
        let subscription: LiveSubscription
        let dispatcher: StreamDispatcher
        let fromSeq: Int64
    }

    private let replays: [One]

    init(subscription: LiveSubscription, dispatcher: StreamDispatcher, fromSeq: Int64) {
        replays = [One(subscription: subscription, dispatcher: dispatcher, fromSeq: fromSeq)]
    }

    /// Runs `batch` as one: a client resuming thousands of subscriptions starts their replays a
    /// few hundred at a time, letting the event loop it may run on serve others in between,
    /// instead of queueing thousands of tasks ahead of everything else at once.
    init(batch: [PendingReplay]) {
        replays = batch.flatMap(\.replays)
    }

    func run() async {
        if replays.count == 1 {
            await Self.run(replays[0])
            return
        }
        await withDiscardingTaskGroup { group in
            for (i, replay) in replays.enumerated() {
                if i % 256 == 255 { await Task.yield() }
                group.addTask { await Self.run(replay) }
            }
        }
    }

    private static func run(_ replay: One) async {
        let subscription = replay.subscription
        do {
            try await replay.dispatcher.replay(subscription, from: replay.fromSeq)
        } catch {
            subscription.session.logger.error(
                "replay failed", metadata: ["subscription": "\(subscription.id)", "error": "\(error)"])
            subscription.session.send(
                .error(id: nil, TocsinError(.internalError, "replay of subscription \(subscription.id) failed; resubscribe to retry")))
        }
    }
}

extension Broker {
    // MARK: Sessions

    func hello(session: Session, client: String?) async throws(TocsinError) -> (ServerMessage, [PendingReplay]) {
        if let client, client.hasPrefix(Self.anonymousPrefix) {
            throw TocsinError(
                .badRequest,
                "client ids starting with '\(Self.anonymousPrefix)' are the broker's own (their subscriptions end with the connection); choose another id")
        }
        let clientID = client ?? Self.anonymousPrefix + UUID().uuidString.lowercased()
        guard session.identify(as: clientID) else {
            throw TocsinError(.badRequest, "this connection already said hello as '\(session.client ?? "")'")
        }
        let records = try await storeCall("loading subscriptions") { try await store.subscriptions(client: clientID) }
        // One read per stream, not per subscription: a client may hold thousands on one stream.
        var streams: [String: Result<StreamInfo, TocsinError>] = [:]
        var infos: [SubscriptionInfo] = []
        var replays: [PendingReplay] = []
        var takenOver: [ObjectIdentifier: (session: Session, ids: [String])] = [:]
        infos.reserveCapacity(records.count)
        replays.reserveCapacity(records.count)
        for (i, record) in records.enumerated() {
            // The loop is CPU work between store reads: let the event loop it may run on
            // (TOCSIN_TASK_EXECUTOR=event-loops) serve its other connections now and then.
            if i % 256 == 255 { await Task.yield() }
            do {
                let channel = try catalog.requireChannel(record.channel)
                let name = channel.definition.stream
                if streams[name] == nil {
                    do {
                        streams[name] = .success(try await freshStream(name))
                    } catch {
                        streams[name] = .failure(error)
                    }
                }
                let info = try streams[name]!.get()
                let (subscribed, replay, replaced) = try attach(
                    session: session, record: record, channel: channel, from: .latest,
                    acked: StreamPosition(epoch: record.epoch, seq: record.ackedSeq), info: info)
                infos.append(subscribed)
                replays.append(replay)
                if let replaced { takenOver[ObjectIdentifier(replaced), default: (replaced, [])].ids.append(record.id) }
            } catch {
                session.send(.error(id: nil, TocsinError(error.code, "subscription \(record.id) cannot resume: \(error.message)")))
            }
        }
        for (_, old) in takenOver { tellTakenOver(old.session, ids: old.ids) }
        let welcome = ServerMessage.welcome(
            id: nil, session: session.id, broker: configuration.brokerID, client: clientID, subscriptions: infos)
        return (welcome, replays.isEmpty ? [] : [PendingReplay(batch: replays)])
    }

    /// Another connection of the same client took these subscriptions: the old connection no
    /// longer delivers (nor acks) them, and is told so.
    private func tellTakenOver(_ old: Session, ids: [String]) {
        for id in ids {
            _ = old.removeSubscription(id)
            old.send(.unsubscribed(id: nil, subscription: id, reason: .takenOver))
        }
    }

    func subscribe(session: Session, channel name: String, params: [String: JSONValue], from: StartPosition) async throws(TocsinError) -> (SubscriptionInfo, PendingReplay?) {
        guard let client = session.client else {
            throw TocsinError(.notIdentified, "send hello before subscribe")
        }
        let channel = try catalog.requireChannel(name)
        let bound = try channel.bind(params: params)
        var boundJSON: [String: JSONValue] = [:]
        for (p, v) in zip(channel.definition.params, bound) { boundJSON[p.name] = v.json }
        let info = try await freshStream(channel.definition.stream)
        let initial = StreamDispatcher.resolve(from, acked: nil, info: info)
        let (record, created) = try await storeCall("opening the subscription") {
            try await store.openSubscription(
                client: client, channel: name, params: boundJSON, initial: StreamPosition(epoch: info.epoch, seq: initial.seq),
                maxPerClient: configuration.maxSubscriptionsPerClient)
        }
        if !created, from == .latest, session.stream(ofSubscription: record.id) != nil {
            // Already delivering on this connection: nothing to restart.
            return (
                SubscriptionInfo(
                    subscription: record.id, channel: name, params: boundJSON, stream: info.name,
                    position: StreamPosition(epoch: record.epoch, seq: record.ackedSeq), recovered: true), nil
            )
        }
        let acked = created ? nil : StreamPosition(epoch: record.epoch, seq: record.ackedSeq)
        let (subscribed, replay, replaced) = try attach(
            session: session, record: record, channel: channel,
            from: created ? .position(StreamPosition(epoch: info.epoch, seq: initial.seq)) : from, acked: acked, info: info)
        if let replaced { tellTakenOver(replaced, ids: [record.id]) }
        var result = subscribed
        if created { result.recovered = initial.recovered }
        return (result, replay)
    }

    /// Attaches a subscription to `session`; returns the session it was delivering on until
    /// now, if another connection had it.
    private func attach(
        session: Session, record: SubscriptionRecord, channel: CompiledChannel, from: StartPosition, acked: StreamPosition?,
        info: StreamInfo
    ) throws(TocsinError) -> (SubscriptionInfo, PendingReplay, replaced: Session?) {
        let params = try channel.bind(params: record.params)
        let start = StreamDispatcher.resolve(from, acked: acked, info: info)
        let subscription = LiveSubscription(id: record.id, session: session, channel: channel, params: params)
        let dispatcher = dispatcher(for: info)
        let replaced = dispatcher.attach(subscription)
        if subscription.isRepetitive { repetitiveSubscriptionAttached() }
        session.addSubscription(record.id, stream: info.name)
        let subscribed = SubscriptionInfo(
            subscription: record.id, channel: channel.name, params: record.params, stream: info.name,
            position: StreamPosition(epoch: info.epoch, seq: start.seq), recovered: start.recovered)
        let other = replaced.flatMap { $0.session !== session ? $0.session : nil }
        return (subscribed, PendingReplay(subscription: subscription, dispatcher: dispatcher, fromSeq: start.seq), other)
    }

    func unsubscribe(session: Session, subscription id: String) async throws(TocsinError) {
        let record = try await ownedSubscription(session: session, id: id)
        _ = try await storeCall("deleting the subscription") { try await store.deleteSubscription(id: record.id) }
        acks.forget(subscription: id)
        _ = session.removeSubscription(id)
        // Wherever it is delivering (possibly another connection of the same client), stop it.
        if let stream = catalog.channel(record.channel)?.definition.stream, let d = existingDispatcher(stream),
            let detached = d.detach(id), detached.session !== session
        {
            _ = detached.session.removeSubscription(id)
            detached.session.send(.unsubscribed(id: nil, subscription: id))
        }
    }

    func ack(session: Session, subscription id: String, seq: Int64) throws(TocsinError) {
        guard session.client != nil else {
            throw TocsinError(.notIdentified, "send hello before ack")
        }
        guard let stream = session.stream(ofSubscription: id), let info = catalog.stream(stream) else {
            throw TocsinError(.unknownSubscription, "no subscription '\(id)' on this connection")
        }
        acks.record(subscription: id, position: StreamPosition(epoch: info.epoch, seq: seq))
    }

    /// Detaches every subscription of a closed session. They stay durable in the store, except
    /// those of a client that said hello without an id: nobody can resume them, so they go.
    func closed(session: Session) async {
        sessions.withLock { _ = $0.removeValue(forKey: session.id) }
        for (id, stream) in session.subscriptions {
            existingDispatcher(stream)?.detach(id, session: session)
        }
        session.finish()
        if let client = session.client, client.hasPrefix(Self.anonymousPrefix) {
            do {
                for record in try await store.subscriptions(client: client) {
                    _ = try await store.deleteSubscription(id: record.id)
                    acks.forget(subscription: record.id)
                }
            } catch {
                logger.warning("could not remove an anonymous client's subscriptions", metadata: ["client": "\(client)", "error": "\(error)"])
            }
        }
    }

    /// Client ids the broker assigns to a hello without one.
    static let anonymousPrefix = "anon-"


    private func ownedSubscription(session: Session, id: String) async throws(TocsinError) -> SubscriptionRecord {
        guard let client = session.client else {
            throw TocsinError(.notIdentified, "send hello first")
        }
        let record = try await storeCall("loading the subscription") { try await store.subscription(id: id) }
        guard let record, record.client == client else {
            throw TocsinError(.unknownSubscription, "no subscription '\(id)' for client '\(client)'")
        }
        return record
    }

    private func freshStream(_ name: String) async throws(TocsinError) -> StreamInfo {
        guard let info = try await storeCall("reading the stream", { try await store.stream(named: name) }) else {
            throw TocsinError(.unknownStream, "no stream named '\(name)'")
        }
        return info
    }

    // MARK: Publishing and reading

    /// Validates every event first (nothing is stored if one is invalid), then appends them as one batch.
    /// With a `key` (`PublishKey`) the stream stored within the window, nothing is stored and
    /// the result is that publish's, marked `duplicate`.
    public func publish(stream name: String, events: [JSONValue], key: String? = nil) async throws(TocsinError) -> Appended {
        let bodies = try validated(stream: name, events: events)
        let result = try await storeCall("appending events") { try await store.append(stream: name, events: bodies, key: key) }
        committed(result, count: bodies.count)
        return result
    }

    /// The same publish without waiting for the commit: throws at once if an event is invalid,
    /// otherwise returns and later calls `completion` (on the store's commit thread; it must not
    /// block). Publishes made one after another complete in that order.
    func publish(
        stream name: String, events: [JSONValue], key: String?,
        completion: @escaping @Sendable (Result<Appended, TocsinError>) -> Void
    ) throws(TocsinError) {
        let bodies = try validated(stream: name, events: events)
        store.append(stream: name, events: bodies, key: key) { [self] result in
            if case .success(let appended) = result { committed(appended, count: bodies.count) }
            completion(result.mapError { storeError("appending events", $0) })
        }
    }

    /// The events' canonical bodies, or the first event's error (with its index in a batch).
    private func validated(stream name: String, events: [JSONValue]) throws(TocsinError) -> [String] {
        guard !events.isEmpty else {
            throw TocsinError(.badRequest, "nothing to publish: the batch is empty")
        }
        guard events.count <= configuration.maxBatchEvents else {
            throw TocsinError(.tooLarge, "a batch may hold at most \(configuration.maxBatchEvents) events, got \(events.count)")
        }
        let schema = try catalog.requireStream(name).definition.schema
        var bodies: [String] = []
        bodies.reserveCapacity(events.count)
        for (i, event) in events.enumerated() {
            do {
                bodies.append(schema.json(of: try schema.record(from: event)))
            } catch {
                metrics.publishRejected.increment()
                throw TocsinError(error.code, events.count == 1 ? error.message : "events[\(i)]: \(error.message)")
            }
        }
        return bodies
    }

    private func committed(_ appended: Appended, count: Int) {
        if appended.duplicate {
            metrics.publishDuplicates.increment()
            return
        }
        metrics.publishedEvents.increment(by: Int64(count))
        metrics.totals.published.add(count, ordering: .relaxed)
    }

    /// Matching events of a subscription after `after` (notify-then-fetch). Scans at most
    /// `maxScan` events; the returned `seq` is where the scan stopped, to continue from.
    func fetch(subscription id: String, client: String?, after: Int64, limit: Int, maxScan: Int = 50_000) async throws(TocsinError) -> ServerMessage {
        guard let record = try await storeCall("loading the subscription", { try await store.subscription(id: id) }),
            client == nil || record.client == client
        else {
            throw TocsinError(.unknownSubscription, "no subscription '\(id)'")
        }
        let channel = try catalog.requireChannel(record.channel)
        let params = try channel.bind(params: record.params)
        let info = try await freshStream(channel.definition.stream)
        var seq = after
        var scanned = 0
        var found: [EventPayload] = []
        let now = TimeFormat.nowMillis()
        while found.count < limit && scanned < maxScan && seq < info.lastSeq {
            let events = try await storeCall("reading events") {
                try await store.readEvents(stream: info.name, after: seq, limit: 1000)
            }
            guard !events.isEmpty else { break }
            for event in events {
                scanned += 1
                seq = event.seq
                guard let record = StreamDispatcher.record(event, schema: info.definition.schema) else {
                    // Stored before a rule tightened: counted, as live dispatch counts (and logs) it.
                    metrics.unreadableEvents.increment()
                    continue
                }
                if channel.predicate.evaluate(record, params, now) {
                    found.append(EventPayload(seq: event.seq, json: event.json))
                    if found.count == limit { break }
                }
            }
        }
        return .fetched(id: nil, subscription: id, events: found, seq: max(seq, after))
    }

    // MARK: Definitions

    func putStream(_ definition: StreamDefinition, recreate: Bool) async throws(TocsinError) -> (StreamInfo, PutOutcome) {
        if recreate {
            // Every channel on the stream must still type-check against the new fields.
            for channel in catalog.channels where channel.definition.stream == definition.name {
                do {
                    _ = try ChannelCompiler.compile(channel.definition, schema: definition.schema)
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
                if let recompiled = try? ChannelCompiler.compile(channel.definition, schema: definition.schema) {
                    catalog.put(channel: recompiled)
                }
            }
        }
        if result.1 == .updated { existingDispatcher(definition.name)?.updateSchema(result.0) }
        return result
    }

    func putChannel(_ definition: ChannelDefinition) async throws(TocsinError) -> (CompiledChannel, PutOutcome) {
        let stream = try catalog.requireStream(definition.stream)
        let compiled = try ChannelCompiler.compile(definition, schema: stream.definition.schema)
        let outcome = try await storeCall("saving the channel") { try await store.putChannel(definition) }
        catalog.put(channel: compiled)
        return (compiled, outcome)
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
        if let d = existingDispatcher(channel.definition.stream) {
            for subscription in d.detachAll(channel: name) {
                _ = subscription.session.removeSubscription(subscription.id)
                subscription.session.send(.unsubscribed(id: nil, subscription: subscription.id))
            }
        }
    }
}
