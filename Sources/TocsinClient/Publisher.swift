import Foundation
import Logging
public import TocsinCore

/// Publishes over HTTP to a broker of the network, found like a subscriber finds one. A broker
/// that cannot be reached is skipped for the next one; an error the broker answered (a schema
/// violation, an unknown stream) is thrown as it is.
///
/// The broker found is kept for later publishes (one `assign` per `refreshInterval` of the
/// locator, 30 s by default, not one per publish), and given up after any failed publish. Keep
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
public struct Publisher: Sendable {
    public struct Published: Sendable, Hashable {
        public var broker: String
        public var epoch: String
        public var seqs: [Int64]
        /// The key had been stored already (by this publish's earlier try, or by the caller's).
        public var duplicate: Bool
    }

    let locator: BrokerLocator
    /// How long one try waits for its broker's answer before trying another.
    public let attemptTimeout: Duration
    /// The broker publishes go to, and when it was chosen.
    private let chosen = LockedBox<(broker: BrokerSummary, at: ContinuousClock.Instant)?>(nil)

    public init(
        seeds: [String], client: String = "publisher", attemptTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "tocsin.publisher")
    ) {
        locator = BrokerLocator(configuration: .init(seeds: seeds, client: client), logger: logger)
        self.attemptTimeout = attemptTimeout
    }

    public func publish(stream: String, events: [JSONValue], key: String? = nil) async throws -> Published {
        let key = key ?? UUID().uuidString.lowercased()
        var exclude: Set<String> = []
        var lastError: (any Error)?
        for _ in 0..<3 {
            let broker = try await self.broker(exclude: exclude)
            do {
                let path = "/v1/streams/" + BrokerLocator.escape(stream) + "/events"
                let reply = try await HTTPCall.call(
                    .POST, broker.httpURL + path, body: .array(events), headers: [("Idempotency-Key", key)], timeout: attemptTimeout)
                return Published(
                    broker: broker.id, epoch: reply["epoch"]?.stringValue ?? "", seqs: (reply["seqs"]?.arrayValue ?? []).compactMap(\.intValue),
                    duplicate: reply["duplicate"]?.boolValue ?? false)
            } catch {
                // Whatever went wrong, the next publish asks the network again: cheap, and a
                // broker behind a failing proxy, or a failing one, is not kept for 30 s.
                chosen.withLock { if $0?.broker.id == broker.id { $0 = nil } }
                if let error = error as? TocsinError, error.code != .unavailable { throw error }
                lastError = error
                exclude.insert(broker.id)
            }
        }
        throw lastError ?? TocsinError(.noBrokerAvailable, "no broker accepted the publish")
    }

    /// The kept broker, unless it is excluded or older than the locator's refresh interval;
    /// otherwise a newly located one, which is kept.
    private func broker(exclude: Set<String>) async throws -> BrokerSummary {
        let now = ContinuousClock.now
        if let kept = chosen.value, !exclude.contains(kept.broker.id), now - kept.at < locator.configuration.refreshInterval {
            return kept.broker
        }
        let broker = try await locator.locate(exclude: exclude)
        chosen.withLock { $0 = (broker, now) }
        return broker
    }
}
