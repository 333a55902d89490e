import Logging
import Synchronization
import TocsinCore

extension Subscriber {
    /// One run of `events()`: holds the `SubscriberStateMachine` behind a lock, feeds it what the
    /// connections, timers and the app do, and carries out its actions after releasing the lock.
    ///
    /// One action is carried out under the lock: yielding a notification. Two connections
    /// deliver at once during a move; deciding and yielding under one lock keeps their
    /// notifications in seq order (`AsyncStream` yields without waiting).
    final class Driver: Sendable {
        typealias Machine = SubscriberStateMachine
        typealias ID = Machine.ConnectionID

        /// Tasks and connections the driver owns, to cancel them when it stops.
        private struct Owned {
            var connections: [ID: Task<Void, Never>] = [:]
            /// Connections that are resumed, for acks.
            var open: [ID: Connection] = [:]
            var timers: [Machine.Timer: Task<Void, Never>] = [:]
            var refresher: Task<Void, Never>?
            var stopped = false
        }

        private let configuration: Configuration
        private let client: String
        private let statistics: Statistics
        private let logger: Logger
        private let continuation: AsyncStream<Event>.Continuation
        private let locator: BrokerLocator?
        private let clock = ContinuousClock()
        private let started: ContinuousClock.Instant
        private let machine: Mutex<Machine>
        private let owned = Mutex(Owned())

        init(_ subscriber: Subscriber, continuation: AsyncStream<Event>.Continuation) {
            configuration = subscriber.configuration
            client = subscriber.configuration.client
            statistics = subscriber.statistics
            logger = subscriber.logger
            self.continuation = continuation
            if case .cluster(var c) = configuration.endpoint {
                // Discovery carries the subscriber's token unless the locator was given its own.
                if c.token == nil { c.token = configuration.token }
                c.trust = configuration.trust
                locator = BrokerLocator(configuration: c, logger: logger)
            } else {
                locator = nil
            }
            started = clock.now
            machine = Mutex(
                Machine(
                    requests: subscriber.requests,
                    backoff: Backoff(initial: configuration.initialBackoff, maximum: configuration.maxBackoff),
                    ackInterval: configuration.ackInterval, ackEvery: configuration.ackEvery))
        }

        private var now: Machine.Instant { clock.now - started }

        /// Calls the machine under the lock, and adds what it counted to `statistics`.
        private func withMachine(_ body: (inout Machine) -> [Machine.Action]) -> [Machine.Action] {
            machine.withLock { m in
                let before = m.counts
                let actions = body(&m)
                let after = m.counts
                if after != before {
                    statistics.duplicates.add(after.duplicatesDropped - before.duplicatesDropped, ordering: .relaxed)
                    statistics.migrations.add(after.migrationsFollowed - before.migrationsFollowed, ordering: .relaxed)
                    statistics.reconnects.add(after.reconnections - before.reconnections, ordering: .relaxed)
                }
                return actions
            }
        }

        func start() {
            // Keep the broker list fresh while connected, so brokers that joined or left are known
            // before the next reconnect needs them.
            if let locator {
                let refresher = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: locator.configuration.refreshInterval)
                        if Task.isCancelled { break }
                        _ = try? await locator.refresh()
                    }
                }
                owned.withLock { $0.refresher = refresher }
            }
            perform(withMachine { $0.start() })
        }

        /// The app stopped iterating (or the sequence finished): acknowledge what it finished on
        /// the way out, close every connection and stop every timer.
        func stop() async {
            let actions = withMachine { $0.stop() }
            let owned = owned.withLock { o in
                o.stopped = true
                return o
            }
            for case .ack(let positions, let id) in actions { await sendAcks(positions, on: id) }
            perform(actions.filter { if case .ack = $0 { false } else { true } })
            owned.refresher?.cancel()
            for task in owned.timers.values { task.cancel() }
            for task in owned.connections.values { task.cancel() }
        }

        func processed(subscription: String, seq: Int64) {
            let now = now
            perform(withMachine { $0.processed(subscription: subscription, seq: seq, now: now) })
        }

        private func perform(_ actions: [Machine.Action]) {
            for action in actions {
                switch action {
                case .locate(let exclude):
                    Task { await self.locate(exclude: exclude) }
                case .connect(let id, let target):
                    owned.withLock { $0.connections[id] = Task { await self.connection(id, to: target) } }
                case .schedule(let timer, let at):
                    let deadline = started + at
                    owned.withLock { o in
                        guard !o.stopped else { return }
                        o.timers[timer]?.cancel()
                        o.timers[timer] = Task {
                            try? await self.clock.sleep(until: deadline)
                            if Task.isCancelled { return }
                            let now = self.now
                            self.perform(self.withMachine { $0.timerFired(timer, now: now) })
                        }
                    }
                case .ack(let positions, let id):
                    Task { await self.sendAcks(positions, on: id) }
                case .close(let id):
                    owned.withLock { $0.connections[id] }?.cancel()
                case .report(let event):
                    continuation.yield(event)
                case .log(let level, let message, let error):
                    logger.log(level: level == .warning ? .warning : .error, "\(message)", metadata: ["error": "\(error)"])
                case .finish:
                    continuation.finish()
                }
            }
        }

        private func locate(exclude: Set<String>) async {
            do {
                let target: Machine.Target
                switch configuration.endpoint {
                case .broker(let url):
                    target = Machine.Target(url: url)
                case .cluster:
                    guard let locator else { throw TocsinError(.internalError, "no locator") }
                    let broker = try await locator.locate(exclude: exclude)
                    target = Machine.Target(url: broker.webSocketURL, broker: broker.id)
                }
                perform(withMachine { $0.located(target) })
            } catch {
                let now = now
                perform(withMachine { $0.locateFailed(error: "\(error)", now: now, jitter: .random(in: 0...1)) })
            }
        }

        /// One connection: hello, subscribe, then deliver until it closes or is closed.
        private func connection(_ id: ID, to target: Machine.Target) async {
            let closed = "the broker at \(TransportFailure.origin(of: target.url)) closed the connection"
            do {
                try await Connection.run(url: target.url, logger: logger, pingInterval: configuration.pingInterval, trust: configuration.trust) { connection in
                    // Notifications that arrive while hello and subscribe are answered wait until the
                    // positions are known; from then on they are handled on the read task directly.
                    connection.bufferEvents()
                    guard case .resume(let requests) = self.machine.withLock({ $0.connected(id) }) else { return }
                    let (welcome, infos) = try await Subscriber.within(
                        self.configuration.setupTimeout, "hello and subscribe at \(target.url)"
                    ) {
                        let token = try await self.configuration.token?()
                        let welcome = try await connection.hello(client: self.client, token: token)
                        var infos = welcome.subscriptions
                        for request in requests {
                            let info = try await connection.subscribe(channel: request.channel, params: request.params, from: request.from)
                            infos.removeAll { $0.subscription == info.subscription }
                            infos.append(info)
                        }
                        return (welcome, infos)
                    }
                    self.owned.withLock { $0.open[id] = connection }
                    defer { self.owned.withLock { _ = $0.open.removeValue(forKey: id) } }
                    let now = self.now
                    self.perform(self.withMachine { $0.resumed(id, broker: welcome.broker, subscriptions: infos, now: now) })
                    connection.handleEvents { message in self.frame(message, on: id) }
                    // `events` carries nothing now; it finishes when the connection closes (or
                    // this task is cancelled: the machine closed it).
                    for await _ in connection.events {}
                    throw ConnectionClosed()
                }
                ended(id, error: closed)
            } catch let error as TocsinError where Subscriber.permanent.contains(error.code) {
                perform(withMachine { $0.connectionFailed(id, error: error) })
            } catch is ConnectionClosed {
                ended(id, error: closed)
            } catch {
                ended(id, error: "\(error)")
            }
            owned.withLock { _ = $0.connections.removeValue(forKey: id) }
        }

        private func ended(_ id: ID, error: String) {
            let now = now
            perform(withMachine { $0.connectionEnded(id, error: error, now: now, jitter: .random(in: 0...1)) })
        }

        /// A frame the broker sent unasked, on the connection's read task.
        private func frame(_ message: ServerMessage, on id: ID) {
            switch message {
            case .notify(let subscription, let seq, let n):
                machine.withLock { m in
                    switch m.received(subscription: subscription, seq: seq, n) {
                    case .deliver(let notification): continuation.yield(.notification(notification))
                    case .duplicate: statistics.duplicates.add(1, ordering: .relaxed)
                    }
                }
            case .subscribed(_, let info):
                perform(withMachine { $0.subscriptionChanged(info) })
            case .migrate(let to, let broker, let reason):
                let target = Machine.Target(url: to, broker: broker.isEmpty ? nil : broker)
                perform(withMachine { $0.migrateOrdered(id, to: target, reason: reason) })
            case .error(_, let code, let message, _):
                logger.warning("broker reported an error", metadata: ["code": "\(code)", "error": "\(message)"])
            case .tokenExpiring:
                refreshToken(on: id)
            default:
                break
            }
        }

        /// Sends a fresh token on the connection whose token is about to expire. A failure is
        /// logged: the broker closes the connection at expiry and the next one says hello afresh.
        private func refreshToken(on id: ID) {
            guard let provider = configuration.token, let connection = owned.withLock({ $0.open[id] }) else { return }
            let logger = self.logger
            Task {
                do {
                    _ = try await connection.refresh(token: try await provider())
                } catch {
                    logger.warning("could not refresh the connection's token", metadata: ["error": "\(error)"])
                }
            }
        }

        /// Sends cumulative acks; what could not be sent is handed back to the machine.
        private func sendAcks(_ positions: [String: Int64], on id: ID) async {
            var unsent = positions
            if let connection = owned.withLock({ $0.open[id] }) {
                do {
                    for (subscription, seq) in positions {
                        try await connection.ack(subscription: subscription, seq: seq)
                        unsent[subscription] = nil
                    }
                } catch {}
            }
            let now = now
            perform(withMachine { unsent.isEmpty ? $0.acksSent(now: now) : $0.acksFailed(unsent: unsent, now: now) })
        }
    }
}
