import Foundation
import Logging
import TocsinCore
import TocsinStore

/// A WebSocket session's subscription requests — hello (which resumes the client's durable
/// subscriptions), subscribe, unsubscribe, ack — and the end of a session. One of the broker's
/// parts (`Broker.subscriptions`); it returns domain values, the endpoint writes the frames.
struct Subscriptions: Sendable {
    let configuration: BrokerConfiguration
    let store: any Store
    let catalog: Catalog
    let tails: StreamTails
    let sessions: SessionRegistry
    let acks: AckTracker
    let repetitiveTicker: RepetitiveTicker
    let datasetTables: DatasetTables
    let bound: BoundSubscriptions
    let logger: Logger
    /// The clock `history` windows end at.
    let nowMillis: @Sendable () -> Int64

    /// How long a subscribe (or hello) waits for the tables of the datasets its channels enrich
    /// from to load; past it, it goes on and notifications say `"version": null` until they are.
    static let datasetLoadWait: Duration = .seconds(10)

    /// What a `hello` established: the session's identity and the subscriptions it resumed.
    struct Welcome: Sendable {
        var session: String
        var broker: String
        var client: String
        var subscriptions: [SubscriptionInfo]
        /// Subscriptions that could not resume (their channel or stream is gone), one error each.
        var failures: [TocsinError]
        /// The resumed subscriptions' replays, to start once the welcome is queued.
        var replay: PendingReplay?
    }

    /// `grant`, with authentication on: the connection's token. Subscriptions to channels it
    /// may no longer subscribe to are not resumed (each gets a `forbidden` error); they stay
    /// stored, for a token that allows them.
    func hello(session: Session, client: String?, grant: Grant? = nil, nowMillis: Int64 = 0) async throws(TocsinError) -> Welcome {
        if let client, client.hasPrefix(Self.anonymousPrefix) {
            throw TocsinError(
                .badRequest,
                "client ids starting with '\(Self.anonymousPrefix)' are the broker's own (their subscriptions end with the connection); choose another id")
        }
        let clientID = client ?? Self.anonymousPrefix + UUID().uuidString.lowercased()
        guard session.identify(as: clientID) else {
            throw TocsinError(.badRequest, "this connection already said hello as '\(session.client ?? "")'")
        }
        // Everything the hello needs from the store is read before anything is attached: when
        // the store cannot be reached, the hello fails whole (`store_unavailable`) and the
        // client may say it again on this connection, instead of getting a welcome without the
        // subscriptions whose stream could not be read.
        let records: [SubscriptionRecord]
        // One read per stream, not per subscription: a client may hold thousands on one stream.
        var streams: [String: Result<StreamInfo, TocsinError>] = [:]
        do {
            records = try await storeCall("loading subscriptions") { try await store.subscriptions(client: clientID) }
            for record in records {
                guard let name = catalog.channel(record.channel)?.definition.stream, streams[name] == nil else { continue }
                do {
                    streams[name] = .success(try await store.requireStream(name))
                } catch where error.code != .storeUnavailable {
                    streams[name] = .failure(error)
                }
            }
        } catch {
            session.forgetClient()
            throw error
        }
        sessions.identified(session)
        var needed: [String: DatasetDefinition] = [:]
        for name in Set(records.map(\.channel)) {
            for e in catalog.channel(name)?.enrichments ?? [] { needed[e.dataset.name] = e.dataset }
        }
        for record in records {
            for value in record.params.values {
                if let text = ParameterBinding.text(of: value), let name = text.split(separator: ".").first, let d = catalog.dataset(String(name)) {
                    needed[d.name] = d
                }
            }
        }
        await datasetTables.ensure(Array(needed.values), within: Self.datasetLoadWait)
        var infos: [SubscriptionInfo] = []
        var replays: [PendingReplay] = []
        var failures: [TocsinError] = []
        var takenOver: [ObjectIdentifier: (session: Session, ids: [String])] = [:]
        infos.reserveCapacity(records.count)
        replays.reserveCapacity(records.count)
        for (i, record) in records.enumerated() {
            // The loop is CPU work between store reads: let the event loop it may run on
            // (TOCSIN_TASK_EXECUTOR=event-loops) serve its other connections now and then.
            if i % 256 == 255 { await Task.yield() }
            do {
                try grant?.check(.subscribe(channel: record.channel), nowMillis: nowMillis)
                let channel = try catalog.requireChannel(record.channel)
                // Not read when the catalog learned of the channel while the streams were read.
                let info = try (streams[channel.definition.stream]
                    ?? .failure(TocsinError(.unknownChannel, "channel '\(record.channel)' is not known yet; say hello again"))).get()
                let (subscribed, replay, replaced) = try attach(
                    session: session, record: record, channel: channel, from: .latest,
                    acked: StreamPosition(epoch: record.epoch, seq: record.ackedSeq), info: info)
                infos.append(subscribed)
                replays.append(replay)
                if let replaced { takenOver[ObjectIdentifier(replaced), default: (replaced, [])].ids.append(record.id) }
            } catch {
                failures.append(TocsinError(error.code, "subscription \(record.id) cannot resume: \(error.message)"))
            }
        }
        for (_, old) in takenOver { tellTakenOver(old.session, ids: old.ids) }
        return Welcome(
            session: session.id, broker: configuration.brokerID, client: clientID, subscriptions: infos, failures: failures,
            replay: replays.isEmpty ? nil : PendingReplay(batch: replays))
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
        let datasets = catalog.datasetsByName
        let bindings = try channel.bindings(params: params, datasets: datasets)
        let needed = channel.enrichments.map(\.dataset) + bindings.compactMap { datasets[$0.dataset] }
        await datasetTables.ensure(needed, within: Self.datasetLoadWait)
        let values = try channel.bind(params: params, bindings: bindings, records: self.bound.records(for: bindings, client: client), client: client)
        var boundJSON: [String: JSONValue] = [:]
        for (p, v) in zip(channel.definition.params, values) { boundJSON[p.name] = v.json }
        // A bound parameter is stored as its binding: the subscription follows the record.
        for b in bindings { boundJSON[b.parameter] = params[b.parameter] }
        let info = try await store.requireStream(channel.definition.stream)
        let (from, windowComplete) = try await position(from, in: info)
        let initial = StreamDispatch.resolve(from, acked: nil, info: info)
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
        if !windowComplete { result.recovered = false }
        return (result, replay)
    }

    /// A `since` or `history` start as the position before the first event published at or
    /// after its time (found by bisecting the retained seqs, one point read per step: publish
    /// times grow with seqs, as commits are numbered in order on one clock). `complete` is false
    /// when the window reaches back before the oldest retained event of a stream that has
    /// deleted some: events of the window may be gone. Other starts are returned as they are.
    private func position(_ from: StartPosition, in info: StreamInfo) async throws(TocsinError) -> (StartPosition, complete: Bool) {
        let since: Int64
        switch from {
        case .since(let ms): since = ms
        case .history(let ms): since = nowMillis() - ms  // both bounded: no overflow
        default: return (from, true)
        }
        var lo = info.firstSeq, hi = info.lastSeq + 1
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            let first = try await storeCall("finding where the history starts") {
                try await store.readEvents(stream: info.name, after: mid - 1, limit: 1).first
            }
            guard let first, first.seq < hi else {
                hi = mid
                continue
            }
            if first.publishedAtMillis >= since { hi = mid } else { lo = first.seq + 1 }
        }
        let complete = lo > info.firstSeq || info.firstSeq <= 1
        return (.position(StreamPosition(epoch: info.epoch, seq: lo - 1)), complete)
    }

    /// Attaches a subscription to `session`; returns the session it was delivering on until
    /// now, if another connection had it.
    private func attach(
        session: Session, record: SubscriptionRecord, channel: CompiledChannel, from: StartPosition, acked: StreamPosition?,
        info: StreamInfo
    ) throws(TocsinError) -> (SubscriptionInfo, PendingReplay, replaced: Session?) {
        let bindings = try channel.bindings(params: record.params, datasets: catalog.datasetsByName)
        let params = try channel.bind(
            params: record.params, bindings: bindings, records: bound.records(for: bindings, client: record.client), client: record.client)
        let start = StreamDispatch.resolve(from, acked: acked, info: info)
        let subscription = LiveSubscription(id: record.id, session: session, channel: channel, params: params)
        let dispatcher = tails.dispatcher(for: info)
        let replaced = dispatcher.attach(subscription)
        if !bindings.isEmpty {
            bound.register(.init(subscription: subscription, dispatcher: dispatcher, params: record.params, bindings: bindings, client: record.client))
        }
        if subscription.isRepetitive { repetitiveTicker.attached() }
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
        if let stream = catalog.channel(record.channel)?.definition.stream, let d = tails.existing(stream), let detached = d.detach(id) {
            bound.detached(id, session: detached.session)
            if detached.session !== session {
                _ = detached.session.removeSubscription(id)
                detached.session.send(.unsubscribed(id: nil, subscription: id))
            }
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
        sessions.closed(session)
        for (id, stream) in session.subscriptions {
            tails.existing(stream)?.detach(id, session: session)
            bound.detached(id, session: session)
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

}
