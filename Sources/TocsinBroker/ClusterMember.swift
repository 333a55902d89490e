import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TocsinHTTPClient
import TocsinCore

/// A broker's membership in a network: registers with the controller, renews its lease with
/// heartbeats carrying its load, carries out the migrate orders that come back, keeps the
/// discovery list fresh, and on graceful shutdown drains (its clients migrate away) before it
/// deregisters.
///
/// It runs as its own service *after* the HTTP server in the service group, so on shutdown it
/// finishes draining while the server still serves the clients it is moving.
final class ClusterMember: Service, Sendable {
    let broker: Broker
    let settings: ClusterSettings
    let logger: Logger
    private let latestView = Mutex<ClusterView?>(nil)
    private let registered = Atomic<Bool>(false)
    /// Set once a drain has started: a re-registration (the controller restarted) drains again.
    private let draining = Atomic<Bool>(false)
    private let heartbeatInterval = Mutex<Duration>(.milliseconds(500))

    init(broker: Broker, settings: ClusterSettings, logger: Logger) {
        self.broker = broker
        self.settings = settings
        self.logger = logger
    }

    /// The controller's discovery list as of the last heartbeat.
    var view: ClusterView? { latestView.withLock { $0 } }

    var controller: String { BaseURL.trimmed(settings.controllerURL) }

    func registration() -> RegistrationRequest {
        let http = settings.advertisedURL ?? "http://\(broker.configuration.host):\(broker.listeningPort.withLock { $0 } ?? broker.configuration.port)"
        return RegistrationRequest(
            id: broker.configuration.brokerID, incarnation: broker.incarnation, webSocketURL: ClusterSettings.webSocketURL(forHTTP: http),
            httpURL: http, region: settings.region, location: settings.location, capacity: settings.capacity)
    }

    func run() async throws {
        // Wait for the server to listen: the registration advertises its port.
        while broker.listeningPort.withLock({ $0 }) == nil {
            try? await Task.sleep(for: .milliseconds(5))
            if Task.isCancelled { return }
        }
        // The member's own HTTP connections to the controller, closed when it stops.
        let client = ControllerClient(url: settings.controllerURL)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.heartbeatLoop(client) }
            // Returns when graceful shutdown starts (or throws when cancelled: then no drain).
            let graceful = (try? await gracefulShutdown()) != nil
            if graceful { await self.drain(client) }
            group.cancelAll()
        }
        await deregister(client)
        try? await client.shutdown()
    }

    // MARK: Heartbeats

    private func heartbeatLoop(_ client: ControllerClient) async {
        var meter = LoadMeter(totals: broker.metrics.totals)
        var failures = 0
        while !Task.isCancelled {
            do {
                if !registered.load(ordering: .relaxed) {
                    try await register(client)
                } else {
                    broker.closeStaleMigrations(olderThan: settings.migrationTimeout)
                    try await heartbeat(client, meter.sample(broker.currentLoad()))
                }
                failures = 0
                try? await Task.sleep(for: heartbeatInterval.withLock { $0 })
            } catch let error as TocsinError where error.code == .unknownBroker || error.code == .staleIncarnation {
                // The controller restarted, or our lease expired (a long pause): register again.
                logger.warning("controller does not know this broker; registering again", metadata: ["reason": "\(error.message)"])
                registered.store(false, ordering: .relaxed)
            } catch is CancellationError {
                return
            } catch let error as TocsinError {
                // The controller answered but refused (e.g. `broker_id_in_use`: another live broker
                // has this id). Say so plainly; retry, since the other one may go away.
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.error("controller refused this broker", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
                }
                try? await Task.sleep(for: .milliseconds(min(5_000, 200 * (1 << min(failures, 5)))))
            } catch {
                failures += 1
                // Keep serving clients while the controller is unreachable; retry with backoff.
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("controller unreachable", metadata: ["controller": "\(controller)", "error": "\(error)"])
                }
                try? await Task.sleep(for: .milliseconds(min(5_000, 200 * (1 << min(failures, 5)))))
            }
        }
    }

    private func register(_ client: ControllerClient) async throws {
        let request = registration()
        let reply = try await client.register(request, timeout: requestTimeout)
        registered.store(true, ordering: .relaxed)
        apply(reply)
        logger.info(
            "registered with the controller",
            metadata: ["controller": "\(controller)", "ws": "\(request.webSocketURL)", "incarnation": "\(request.incarnation)"])
        // Registered again mid-drain (the controller restarted): it must not send clients here.
        if draining.load(ordering: .relaxed) { try await requestDrain(client) }
    }

    private func requestDrain(_ client: ControllerClient) async throws {
        apply(try await client.drain(id: broker.configuration.brokerID, incarnation: broker.incarnation, timeout: requestTimeout))
    }

    private func heartbeat(_ client: ControllerClient, _ load: BrokerLoad) async throws {
        apply(try await client.heartbeat(id: broker.configuration.brokerID, incarnation: broker.incarnation, load: load, timeout: requestTimeout))
    }

    /// A heartbeat that takes longer than this is abandoned and retried: waiting longer would
    /// let the lease expire unnoticed.
    var requestTimeout: Duration { max(.milliseconds(200), heartbeatInterval.withLock { $0 } * 2) }

    private func apply(_ reply: LeaseReply) {
        latestView.withLock { $0 = reply.cluster }
        heartbeatInterval.withLock { $0 = .milliseconds(max(50, reply.heartbeatMillis)) }
        for command in reply.commands {
            broker.migrate(count: command.count, to: command.to, reason: command.reason)
        }
    }

    // MARK: Drain and leave

    /// Tells the controller this broker is leaving; its clients get migrate orders through the
    /// heartbeats, which keep running. Waits until they have gone or `drainTimeout` passes.
    private func drain(_ client: ControllerClient) async {
        guard registered.load(ordering: .relaxed) else { return }
        let others = (view?.brokers ?? []).filter { $0.id != broker.configuration.brokerID && $0.state == .active }
        guard !others.isEmpty else {
            logger.info("no other broker to drain to; closing connections")
            return
        }
        do {
            draining.store(true, ordering: .relaxed)
            try await requestDrain(client)
        } catch {
            logger.warning("could not start draining; clients will fail over", metadata: ["error": "\(error)"])
            return
        }
        logger.notice("draining: moving clients to other brokers", metadata: ["clients": "\(broker.sessions.withLock { $0.count })"])
        let deadline = ContinuousClock.now + settings.drainTimeout
        while ContinuousClock.now < deadline {
            if broker.identifiedSessionCount == 0 { break }
            // Everyone else left too (the whole network is stopping): nowhere to send them.
            let me = broker.configuration.brokerID
            if let view, !view.brokers.contains(where: { $0.id != me && $0.state == .active }) { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        let left = broker.identifiedSessionCount
        if left > 0 {
            logger.warning("drain timed out; closing the remaining connections", metadata: ["clients": "\(left)"])
        } else {
            logger.notice("drained")
        }
    }

    private func deregister(_ client: ControllerClient) async {
        guard registered.exchange(false, ordering: .relaxed) else { return }
        do {
            try await client.deregister(id: broker.configuration.brokerID, incarnation: broker.incarnation)
        } catch {
            logger.warning("could not deregister; the lease will expire", metadata: ["error": "\(error)"])
        }
    }
}

/// Turns the broker's running totals into per-second rates between two heartbeats.
struct LoadMeter {
    let totals: BrokerMetrics.Totals
    private var last = ContinuousClock.now
    private var delivered = 0
    private var published = 0
    private var cpuSeconds = LoadMeter.processCPUSeconds()

    init(totals: BrokerMetrics.Totals) {
        self.totals = totals
        delivered = totals.delivered.load(ordering: .relaxed)
        published = totals.published.load(ordering: .relaxed)
    }

    mutating func sample(_ current: (connections: Int, subscriptions: Int, migrating: Int)) -> BrokerLoad {
        let now = ContinuousClock.now
        let elapsed = max(0.001, Double((now - last).components.attoseconds) / 1e18 + Double((now - last).components.seconds))
        let d = totals.delivered.load(ordering: .relaxed)
        let p = totals.published.load(ordering: .relaxed)
        let cpu = Self.processCPUSeconds()
        defer {
            last = now
            delivered = d
            published = p
            cpuSeconds = cpu
        }
        return BrokerLoad(
            connections: current.connections, subscriptions: current.subscriptions,
            deliveriesPerSecond: Double(d - delivered) / elapsed, publishesPerSecond: Double(p - published) / elapsed,
            cpu: max(0, (cpu - cpuSeconds) / elapsed), migrating: current.migrating)
    }

    /// User + system CPU time of this process.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        #if canImport(Glibc)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
