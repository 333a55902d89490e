import Logging
public import TocsinCore
import TocsinHTTPClient

/// Finds the broker a client should use. It learns the network from any node it knows (each
/// broker and the controller serve `GET /v1/cluster`), asks the controller's `assign`, and when
/// the controller is unreachable picks from the last known list itself (rendezvous hashing on
/// the client id, so a client still lands on the same survivor every time).
///
/// ```swift
/// let locator = BrokerLocator(configuration: .init(seeds: ["http://127.0.0.1:7300"], client: "phone-42"), logger: logger)
/// let broker = try await locator.locate()          // ask `assign` (or pick from the list)
/// let next = try await locator.locate(exclude: [broker.id])  // after failing to reach it
/// ```
public actor BrokerLocator {
    /// Where to start and who is asking.
    public struct Configuration: Sendable {
        /// HTTP URLs of any brokers or the controller: `http://host:port`.
        public var seeds: [String]
        /// The client id `assign` places (the same id always lands on the same broker when the
        /// controller is unreachable).
        public var client: String
        /// The region to prefer, if any (`assign`'s `region`).
        public var region: String?
        /// Where the client is, to prefer a broker near it (`assign`'s `lat`/`lon`).
        public var location: GeoPoint?
        /// Refresh the broker list when it is older than this.
        public var refreshInterval: Duration = .seconds(30)
        /// How long one discovery or `assign` call may take before the next node is tried.
        public var requestTimeout: Duration = .seconds(2)
        /// A token with the `discovery` scope, when the network requires tokens.
        public var token: TokenSource?
        /// The CAs `https://` nodes' certificates are verified against.
        public var trust: TLSTrust = .system

        /// Seeds are HTTP URLs of any nodes (trailing slashes are dropped).
        public init(seeds: [String], client: String, region: String? = nil, location: GeoPoint? = nil) {
            self.seeds = seeds.map(Self.trimmed)
            self.client = client
            self.region = region
            self.location = location
        }

        static func trimmed(_ url: String) -> String { BaseURL.trimmed(url) }
    }

    /// As given at creation.
    public let configuration: Configuration
    private let logger: Logger
    /// The discovery list as last read (nil before the first `refresh`).
    public private(set) var view: ClusterView?
    private var refreshedAt: ContinuousClock.Instant?

    /// A locator that has read nothing yet; the first `locate` or `refresh` asks the network.
    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Reads the discovery list from the first node that answers: the controller last heard of,
    /// then the seeds (in random order, so clients spread their questions; with several
    /// controllers, give them all), then any broker seen before.
    @discardableResult
    public func refresh() async throws -> ClusterView {
        // The controller knows best; then the seeds; then any broker seen before.
        var candidates = view?.controller.map { [$0] } ?? []
        candidates += configuration.seeds.shuffled()
        candidates += (view?.brokers.map(\.httpURL) ?? []).shuffled()
        var failures: [any Error] = []
        var seen: Set<String> = []
        for base in candidates where seen.insert(base).inserted {
            do {
                var fresh = try await controller(at: base).cluster(timeout: configuration.requestTimeout)
                // A standalone broker names no controller: it answers `assign` itself.
                if fresh.controller == nil, fresh.brokers.count == 1 { fresh.controller = base }
                view = fresh
                refreshedAt = .now
                return fresh
            } catch {
                failures.append(error)
            }
        }
        throw Self.combined(failures) ?? TocsinError(.noBrokerAvailable, "no seed URL given")
    }

    /// One error for every node failing: the only one, or, when all failed to answer, one
    /// `TransportFailure` naming them all ("cannot reach a broker at any of A, B (connection refused)…").
    static func combined(_ failures: [any Error]) -> (any Error)? {
        guard failures.count > 1 else { return failures.first }
        let transport = failures.compactMap { $0 as? TransportFailure }
        guard transport.count == failures.count, let first = transport.first else { return failures.last }
        var problems: [String] = []
        for t in transport where !problems.contains(t.problem) { problems.append(t.problem) }
        return TransportFailure(
            kind: transport.allSatisfy { $0.kind == first.kind } ? first.kind : .other,
            url: "any of " + transport.map(\.url).joined(separator: ", "), problem: problems.joined(separator: "; "))
    }

    /// The broker to connect to. `exclude` names brokers the client just failed to reach.
    public func locate(exclude: Set<String> = []) async throws -> BrokerSummary {
        // The controller knows who is alive (`exclude` steers it off the broker that just failed),
        // so a list younger than `refreshInterval` is good enough; without a controller, a failure
        // is a reason to look again.
        let stale = refreshedAt.map { ContinuousClock.now - $0 > configuration.refreshInterval } ?? true
        var refreshFailure: (any Error)?
        if view == nil || stale || (!exclude.isEmpty && view?.controller == nil) {
            do {
                try await refresh()
            } catch {
                refreshFailure = error
                logger.debug("could not refresh the broker list", metadata: ["error": "\(error)"])
            }
        }
        if let controller = view?.controller {
            do {
                return try await assign(controller: controller, exclude: exclude)
            } catch let error as TocsinError where error.code == .noBrokerAvailable {
                throw error
            } catch {
                logger.debug("controller unreachable; looking for another", metadata: ["error": "\(error)"])
                // Perhaps it died and another controller answers (several run on one database),
                // or the list is old: look again, ask the controller that answered, and else pick
                // from the list.
                if let other = (try? await refresh())?.controller, other != controller,
                    let broker = try? await assign(controller: other, exclude: exclude)
                {
                    return broker
                }
            }
        }
        guard let choice = Self.fallback(client: configuration.client, brokers: view?.brokers ?? [], exclude: exclude) else {
            // Nothing was ever reached: say why (refused, unknown host…) rather than only that.
            if view == nil, let refreshFailure { throw refreshFailure }
            throw TocsinError(.noBrokerAvailable, "no reachable broker is known (seeds: \(configuration.seeds.joined(separator: ", ")))")
        }
        return choice
    }

    private func assign(controller url: String, exclude: Set<String>) async throws -> BrokerSummary {
        let request = AssignmentRequest(
            clientID: configuration.client, region: configuration.region, location: configuration.location, exclude: exclude)
        return try await controller(at: url).assign(request, timeout: configuration.requestTimeout).broker
    }

    /// The controller's API at `url` (or any node's, for the discovery list), over the process's
    /// shared HTTP connections.
    private func controller(at url: String) -> ControllerClient {
        var client = ControllerClient(url: url, httpClient: HTTPCall.shared(trusting: configuration.trust))
        client.token = configuration.token
        return client
    }

    /// Without a controller: the active broker with the highest rendezvous score for this client,
    /// avoiding `exclude` unless nothing else is left.
    static func fallback(client: String, brokers: [BrokerSummary], exclude: Set<String>) -> BrokerSummary? {
        let active = brokers.filter { $0.state == .active }
        let preferred = active.filter { !exclude.contains($0.id) }
        let pool = preferred.isEmpty ? active : preferred
        return pool.max { StableHash.hash(client + "@" + $0.id) < StableHash.hash(client + "@" + $1.id) }
    }

    static func escape(_ s: String) -> String {
        ControllerClient.escape(s)
    }
}
