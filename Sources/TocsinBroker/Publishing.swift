import TocsinCore
import TocsinStore
import Tracing

/// Publishing events, and reading a subscription's matches (notify-then-fetch). One of the
/// broker's parts (`Broker.publishing`).
struct Publishing: Sendable {
    let configuration: BrokerConfiguration
    let store: any Store
    let catalog: Catalog
    let metrics: BrokerMetrics
    let nowMillis: @Sendable () -> Int64
    /// Enriches fetched events of channels with `enrich` clauses (at the tables' current versions).
    let enricher: Enricher?
    /// Resolves bound parameters (a fetch matches with the record's current values).
    let bound: BoundSubscriptions?
    /// Pages computed once per interest and stream position (`ResultCache`).
    let results: ResultCache
    /// Spans of each publish and its commit, when the broker traces.
    var tracing: BrokerTracing? = nil

    /// Validates every event first (nothing is stored if one is invalid), then appends them as one batch.
    /// With a `key` (`PublishKey`) the stream stored within the window, nothing is stored and
    /// the result is that publish's, marked `duplicate`.
    /// `traceparent`: the publisher's, when it traces the publish (the spans join its trace);
    /// `transport`: how it came (`http`, `websocket`), for the span.
    func publish(
        stream name: String, events: [JSONValue], key: String? = nil, traceparent: String? = nil, transport: String = "http"
    ) async throws(TocsinError) -> Appended {
        let trace = tracing?.publish(stream: name, events: events.count, parent: traceparent, transport: transport)
        var commit: (any Span)?
        do {
            let bodies = try validated(stream: name, events: events)
            commit = trace?.committing()
            let result = try await storeCall("appending events") {
                try await store.append(stream: name, events: bodies, key: key, trace: trace?.traceparent)
            }
            committed(result, count: bodies.count)
            trace?.end(commit, .success(result))
            return result
        } catch {
            trace?.end(commit, .failure(error))
            throw error
        }
    }

    /// The same publish without waiting for the commit: throws at once if an event is invalid,
    /// otherwise returns and later calls `completion` (on the store's commit thread; it must not
    /// block). Publishes made one after another complete in that order.
    func publish(
        stream name: String, events: [JSONValue], key: String?, traceparent: String? = nil,
        completion: @escaping @Sendable (Result<Appended, TocsinError>) -> Void
    ) throws(TocsinError) {
        let trace = tracing?.publish(stream: name, events: events.count, parent: traceparent, transport: "websocket")
        let bodies: [String]
        do {
            bodies = try validated(stream: name, events: events)
        } catch {
            trace?.end(nil, .failure(error))
            throw error
        }
        let commit = trace?.committing()
        store.append(stream: name, events: bodies, key: key, trace: trace?.traceparent) { [self] result in
            if case .success(let appended) = result { committed(appended, count: bodies.count) }
            let result = result.mapError { storeError("appending events", $0) }
            trace?.end(commit, result)
            completion(result)
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
        if DatasetDefinition.isChangeStream(name) {
            let dataset = name.dropLast(DatasetDefinition.changeStreamSuffix.count)
            throw TocsinError(
                .conflict, "stream '\(name)' is the change stream of dataset '\(dataset)': only writes to the dataset append to it (POST /v1/datasets/\(dataset)/records)")
        }
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
    /// A page of a subscription's matching events.
    struct Fetched: Sendable, Equatable {
        var subscription: String
        var events: [EventPayload]
        /// Where the scan stopped: the next fetch continues after it.
        var seq: Int64
    }

    /// `client`: the caller's client id (nil: anyone's, without authentication); another
    /// client's subscription is unknown to it. `grant`, with authentication on: the caller's
    /// token, which must still allow subscribing to the subscription's channel.
    func fetch(
        subscription id: String, client: String?, after: Int64, limit: Int, maxScan: Int = 50_000, grant: Grant? = nil,
        attached: StreamDispatcher.AttachedView? = nil
    ) async throws(TocsinError) -> Fetched {
        let channel: CompiledChannel
        let params: [Value]
        let stream: (name: String, epoch: String, lastSeq: Int64, schema: StreamSchema)
        if let attached {
            // Attached to the caller's connection: no store read (the common case, right after a notification).
            try grant?.check(.subscribe(channel: attached.channel.name), nowMillis: nowMillis())
            (channel, params) = (attached.channel, attached.params)
            stream = (attached.stream, attached.epoch, attached.position, attached.schema)
        } else {
            guard let record = try await storeCall("loading the subscription", { try await store.subscription(id: id) }),
                client == nil || record.client == client || grant?.mayIdentify(as: record.client) == true
            else {
                throw TocsinError(.unknownSubscription, "no subscription '\(id)'")
            }
            try grant?.check(.subscribe(channel: record.channel), nowMillis: nowMillis())
            channel = try catalog.requireChannel(record.channel)
            if let bound {
                params = try await bound.resolve(channel, params: record.params, client: record.client, datasets: catalog.datasetsByName)
            } else {
                params = try channel.bind(params: record.params)
            }
            let info = try await store.requireStream(channel.definition.stream)
            stream = (info.name, info.epoch, info.lastSeq, info.definition.schema)
        }
        let key = ResultCache.Key(
            channel: channel.name, params: params, epoch: stream.epoch, lastSeq: stream.lastSeq, after: after, limit: limit, maxScan: maxScan)
        let compute = { () async throws(TocsinError) -> ResultCache.Page in
            var seq = after
            var scanned = 0
            var found: [EventPayload] = []
            let now = nowMillis()
            while found.count < limit && scanned < maxScan && seq < stream.lastSeq {
                let events = try await storeCall("reading events") {
                    try await store.readEvents(stream: stream.name, after: seq, limit: Int(min(1000, stream.lastSeq - seq)))
                }
                guard !events.isEmpty else { break }
                for event in events where event.seq <= stream.lastSeq {
                    scanned += 1
                    seq = event.seq
                    guard let record = StreamDispatch.record(event, schema: stream.schema) else {
                        // Stored before a rule tightened: counted, as live dispatch counts (and logs) it.
                        metrics.unreadableEvents.increment()
                        continue
                    }
                    if channel.predicate.evaluate(record, params, now) {
                        let enriched = enricher?.json(channel, record: record, params: params, nowMillis: now)
                        found.append(EventPayload(seq: event.seq, json: event.json, enriched: enriched))
                        if found.count == limit { break }
                    }
                }
            }
            return ResultCache.Page(events: found, seq: max(seq, after))
        }
        // A channel that reads the clock matches differently a moment later: computed each time.
        let page = channel.readsClock ? try await compute() : try await results.page(key, compute: compute)
        return Fetched(subscription: id, events: page.events, seq: page.seq)
    }
}
