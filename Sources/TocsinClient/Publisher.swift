import Logging
public import TocsinCore

/// Publishes over HTTP to a broker of the network, found like a subscriber finds one. A broker
/// that cannot be reached is skipped for the next one; an error the broker answered (a schema
/// violation, an unknown stream) is thrown as it is.
///
/// A publish whose reply is lost with its connection may or may not have been committed; it is
/// retried once elsewhere, so an event can be stored twice in that rare case (at-least-once).
public struct Publisher: Sendable {
    public struct Published: Sendable, Hashable {
        public var broker: String
        public var epoch: String
        public var seqs: [Int64]
    }

    let locator: BrokerLocator

    public init(seeds: [String], client: String = "publisher", logger: Logger = Logger(label: "tocsin.publisher")) {
        locator = BrokerLocator(configuration: .init(seeds: seeds, client: client), logger: logger)
    }

    public func publish(stream: String, events: [JSONValue]) async throws -> Published {
        var exclude: Set<String> = []
        var lastError: (any Error)?
        for _ in 0..<3 {
            let broker = try await locator.locate(exclude: exclude)
            do {
                let path = "/v1/streams/" + BrokerLocator.escape(stream) + "/events"
                let reply = try await HTTPCall.call(.POST, broker.httpURL + path, body: .array(events))
                return Published(
                    broker: broker.id, epoch: reply["epoch"]?.stringValue ?? "", seqs: (reply["seqs"]?.arrayValue ?? []).compactMap(\.intValue))
            } catch let error as TocsinError where error.code != .unavailable {
                throw error
            } catch {
                lastError = error
                exclude.insert(broker.id)
            }
        }
        throw lastError ?? TocsinError(.noBrokerAvailable, "no broker accepted the publish")
    }
}
