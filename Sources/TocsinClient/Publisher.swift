import Foundation
import Logging
public import TocsinCore

/// Publishes over HTTP to a broker of the network, found like a subscriber finds one. A broker
/// that cannot be reached is skipped for the next one; an error the broker answered (a schema
/// violation, an unknown stream) is thrown as it is.
///
/// The broker found is kept for later publishes (one `assign` per `refreshInterval` of the
/// locator, 30 s by default, not one per publish; publishes made at once while none is kept
/// share one `assign`). It is given up when a publish to it fails for a reason that may be the
/// broker's: it could not be reached or did not answer in time, it answered `unavailable` or
/// `internal`, or something between answered with something else. Errors about the publish
/// itself (`schema_violation`, `too_large`, `bad_request`) and `store_full`
/// (the network's shared store: another broker has no more room) are thrown and keep it. Keep
/// one `Publisher` for many publishes: each new one asks the network again.
///
/// Every publish carries a key (`PublishKey`; a fresh UUID unless the caller gives one). A publish
/// whose reply is lost with its connection may or may not have been committed; it is retried
/// elsewhere with the same key, so it is stored once: brokers of one network share the store,
/// which remembers keys for two minutes by default. A caller that retries after `publish`
/// throws should pass its own `key`, the same each time, so those retries are safe too.
///
/// A broker that accepts the request and never answers (hung, stopped, cut off behind a proxy)
/// costs one `attemptTimeout` (10 s by default), then the publish goes elsewhere with its key.
///
/// ```swift
/// let publisher = Publisher(seeds: ["http://127.0.0.1:7300"])
/// let published = try await publisher.publish(stream: "emergencies", events: [["kind": "fire", "severity": 4, ...]])
/// print(published.seqs)
/// ```
public struct Publisher: Sendable {
    /// A committed publish.
    public struct Published: Sendable, Hashable {
        /// The id of the broker that stored it.
        public var broker: String
        /// The stream's epoch the seqs belong to.
        public var epoch: String
        /// The events' seqs, in the order given.
        public var seqs: [Int64]
        /// The key had been stored already (by this publish's earlier try, or by the caller's).
        public var duplicate: Bool
    }

    let locator: BrokerLocator
    /// How long one try waits for its broker's answer before trying another.
    public let attemptTimeout: Duration
    /// The access token each publish carries, if any.
    let token: TokenSource?
    /// The broker publishes go to, and when it was chosen; or the search for one under way.
    private let chosen = LockedBox<Choice>(.none)

    private enum Choice {
        case none
        case kept(BrokerSummary, at: ContinuousClock.Instant)
        /// Publishes that need a broker meanwhile (excluding the same ones) wait for this one.
        case locating(Task<BrokerSummary, any Error>, excluding: Set<String>)
    }

    /// A publisher of a network (or of one broker: a standalone broker is a network of one).
    /// - Parameters:
    ///   - seeds: HTTP URLs of any of the network's nodes, `http://host:port`.
    ///   - client: The client id `assign` places (publishes are not durable under it).
    ///   - attemptTimeout: How long one try waits for its broker's answer.
    ///   - trust: The CAs `https://` nodes' certificates are verified against.
    ///   - logger: Where the search for a broker logs.
    ///   - token: The access token (scopes `publish:<stream>` and `discovery`), when the network requires tokens.
    public init(
        seeds: [String], client: String = "publisher", attemptTimeout: Duration = .seconds(10), trust: TLSTrust = .system,
        logger: Logger = Logger(label: "tocsin.publisher"), token: TokenSource? = nil
    ) {
        var configuration = BrokerLocator.Configuration(seeds: seeds, client: client)
        configuration.trust = trust
        configuration.token = token
        self.init(locating: configuration, attemptTimeout: attemptTimeout, logger: logger)
    }

    /// A publisher that finds its brokers as `configuration` says (its timeouts too).
    init(locating configuration: BrokerLocator.Configuration, attemptTimeout: Duration, logger: Logger) {
        locator = BrokerLocator(configuration: configuration, logger: logger)
        self.attemptTimeout = attemptTimeout
        self.token = configuration.token
    }

    /// Publishes events in one batch (all or nothing) and returns once they are committed.
    /// - Parameters:
    ///   - stream: The stream's name.
    ///   - events: The events, each a JSON object of the stream's schema (at most 10,000).
    ///   - key: The publish's key; give the same one when retrying after this throws, so the
    ///     events are stored once. A fresh UUID when nil.
    ///   - traceparent: The caller's W3C trace context, when it traces the publish: a broker that
    ///     records spans makes the publish, its commit and every delivery part of that trace.
    /// - Returns: Where and under which seqs they were stored.
    /// - Throws: The broker's `TocsinError` about the publish (`schema_violation`, `too_large`,
    ///   `bad_request`, `store_full`, `unknown_stream`…), or, when no broker took it after three
    ///   tries, the last failure (a `TransportFailure`, `unavailable`, `no_broker_available`…).
    public func publish(stream: String, events: [JSONValue], key: String? = nil, traceparent: String? = nil) async throws -> Published {
        let key = key ?? UUID().uuidString.lowercased()
        var exclude: Set<String> = []
        var lastError: (any Error)?
        for _ in 0..<3 {
            let broker = try await self.broker(exclude: exclude)
            do {
                let path = "/v1/streams/" + BrokerLocator.escape(stream) + "/events"
                var headers = [("Idempotency-Key", key)]
                if let traceparent { headers.append(("traceparent", traceparent)) }
                if let token { headers.append(("Authorization", "Bearer " + (try await token()))) }
                let reply = try await HTTPCall.call(
                    .POST, broker.httpURL + path, body: .array(events), headers: headers, timeout: attemptTimeout,
                    using: HTTPCall.shared(trusting: locator.configuration.trust))
                let published = try PublishReply(json: reply)
                return Published(broker: broker.id, epoch: published.epoch, seqs: published.seqs, duplicate: published.duplicate)
            } catch {
                if let error = error as? TocsinError, Self.aboutTheRequest(error.code) { throw error }
                // Maybe the broker's fault: the next publish asks the network again, so a failing
                // broker, or one behind a failing proxy, is not kept for 30 s.
                chosen.withLock { c in
                    if case .kept(let kept, _) = c, kept.id == broker.id { c = .none }
                }
                // Tried elsewhere (with the same key, so it is stored once): the broker said it is
                // unavailable or failed, or what answered was not a broker (a proxy's error page).
                if let error = error as? TocsinError, ![.unavailable, .internalError, .badJSON].contains(error.code) { throw error }
                lastError = error
                exclude.insert(broker.id)
            }
        }
        throw lastError ?? TocsinError(.noBrokerAvailable, "no broker accepted the publish")
    }

    /// The shared search's result, or `CancellationError` as soon as this caller is cancelled
    /// (the search goes on for the others).
    static func value(of search: Task<BrokerSummary, any Error>) async throws -> BrokerSummary {
        let waiter = LockedBox<CheckedContinuation<BrokerSummary, any Error>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiter.withLock { $0 = continuation }
                if Task.isCancelled { waiter.withLock { $0.take() }?.resume(throwing: CancellationError()) }
                Task { let result = await search.result; waiter.withLock { $0.take() }?.resume(with: result) }
            }
        } onCancel: {
            waiter.withLock { $0.take() }?.resume(throwing: CancellationError())
        }
    }

    /// Errors a broker answers about the publish itself, or about the store every broker of the
    /// network shares: another broker would answer the same, and this one is fine. Anything else
    /// (a reply that is not the broker's JSON comes back as `bad_json` or `internal`) may be the
    /// broker's fault.
    /// (`unknown_stream` is not one: a broker whose catalog lags the store's may say it.)
    static func aboutTheRequest(_ code: TocsinError.Code) -> Bool {
        [.schemaViolation, .tooLarge, .badRequest, .storeFull].contains(code)
    }

    /// The kept broker, unless it is excluded or older than the locator's refresh interval;
    /// otherwise a newly located one, which is kept. One search at a time: publishes that need
    /// a broker while one is being located wait for it instead of asking the network too.
    private func broker(exclude: Set<String>) async throws -> BrokerSummary {
        enum Step {
            case use(BrokerSummary)
            case wait(Task<BrokerSummary, any Error>)
        }
        let now = ContinuousClock.now
        let refresh = locator.configuration.refreshInterval
        let step = chosen.withLock { c -> Step in
            switch c {
            case .kept(let broker, let at) where !exclude.contains(broker.id) && now - at < refresh:
                return .use(broker)
            case .locating(let search, let excluding) where excluding == exclude:
                return .wait(search)
            default:
                let search = Task { [locator] in try await locator.locate(exclude: exclude) }
                c = .locating(search, excluding: exclude)
                return .wait(search)
            }
        }
        let search: Task<BrokerSummary, any Error>
        switch step {
        case .use(let broker): return broker
        case .wait(let s): search = s
        }
        do {
            let broker = try await Self.value(of: search)
            chosen.withLock { c in
                if case .locating(let current, _) = c, current == search { c = .kept(broker, at: .now) }
            }
            return broker
        } catch {
            chosen.withLock { c in
                if case .locating(let current, _) = c, current == search { c = .none }
            }
            throw error
        }
    }
}
