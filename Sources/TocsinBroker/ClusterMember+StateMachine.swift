import TocsinCore

extension ClusterMember {
    /// A broker's membership decisions, free of I/O: fed what the controller answered (or that
    /// it could not be reached) and how the drain is going, it says what to do next. Time is
    /// passed in (`now`, from any fixed origin); `ClusterMember` makes the calls, sleeps, and
    /// carries out migrate orders and logs.
    ///
    /// Two loops drive it. The heartbeat loop: `start()`, then a call (`register`, `heartbeat`,
    /// or `requestDrain` after a re-registration mid-drain) whose outcome it reports
    /// (`registered`, `answered`, `refused`, `unreachable`), or a `sleep` after which it reports
    /// `woke()`. The drain, on graceful shutdown: `drainStarted`, a `requestDrain` call reported
    /// with `drainAccepted` or `drainFailed`, then `sleep`s each followed by `drainProgress`,
    /// until `drainEnded`. Then `shutdown()` says whether to deregister.
    ///
    /// Every list of actions holds at most one call or `sleep`, and it comes last: the actions
    /// before it (migrate orders, logs) are carried out first.
    ///
    /// Fencing: the machine remembers the highest controller epoch it has seen. A reply with a
    /// lower one (from a deposed leader) is taken for nothing — neither its list nor its orders —
    /// and an order with a lower one is refused; both are logged (`staleOrders`) and counted.
    struct StateMachine: Equatable {
        enum Lease: Equatable {
            /// Must register: not yet, or the controller no longer knows this incarnation.
            case unregistered
            case registered
            /// Stopped: deregistered, or never to register again.
            case left
        }

        enum Drain: Equatable {
            case notRequested
            /// Graceful shutdown started: the controller is asked to drain this broker (again
            /// after every re-registration); clients leave until `deadline` (nil until it accepted).
            case requested(deadline: Duration?)
            case ended
        }

        /// Something to log.
        enum Fact: Equatable {
            case registered
            /// The controller does not know this incarnation (it restarted, or the lease expired).
            case forgotten(reason: String)
            /// Refused for another reason (e.g. `broker_id_in_use`); logged on the first and every 20th.
            case refused(code: TocsinError.Code, message: String)
            /// No answer; logged on the first and every 20th failure in a row.
            case unreachable(error: String)
            /// No controller leads right now (every one answered `not_leader` or could not be
            /// reached): an election is under way. Logged on the first and every 20th in a row.
            case noLeader(message: String)
            case nothingToDrainTo
            case drainNotStarted(error: String)
            case draining(clients: Int)
            case drained
            /// Every other broker left too (the whole network is stopping): nowhere to send them.
            case nowhereLeftToDrainTo(clients: Int)
            case drainTimedOut(clients: Int)
            case deregisterFailed(error: String)
            /// Orders (and, when `reply`, the whole reply) from a controller with an `epoch`
            /// lower than the `highest` seen: refused.
            case staleOrders(count: Int, epoch: Int64, highest: Int64, reply: Bool)
        }

        enum Action: Equatable {
            case register
            /// Renew the lease (closing stale migrations and sampling the load first).
            case heartbeat
            case requestDrain
            case deregister
            case sleep(Duration)
            case migrate(count: Int, to: BrokerSummary, reason: String)
            case log(Fact)
            /// Put this live configuration in force.
            case configure(ConfigPush)
            /// Carry out an operator command (its result goes in the next heartbeat).
            case execute(CommandOrder)
            /// The drain is over: shutdown may go on.
            case drainEnded
        }

        let brokerID: String
        let drainTimeout: Duration
        /// Retry delays after failures in a row: attempt n waits at most `backoff.ceiling(attempt: n)`.
        let backoff: Backoff
        /// How often the drain checks whether the clients have gone.
        let drainPollInterval: Duration
        private(set) var lease: Lease = .unregistered
        private(set) var drain: Drain = .notRequested
        /// Failed calls in a row.
        private(set) var failures = 0
        /// As the controller last said (`LeaseReply.heartbeatMillis`, at least 50 ms).
        private(set) var heartbeatInterval: Duration = .milliseconds(500)
        /// The controller's discovery list as of the last reply that carried one.
        private(set) var view: ClusterView?
        /// Its version (`LeaseReply.viewVersion`), reported in heartbeats so the controller leaves
        /// an unchanged list out of its reply.
        private(set) var viewVersion: Int64?
        /// The highest controller epoch seen in a reply (fencing).
        private(set) var highestEpoch: Int64 = 0
        /// The last heartbeat followed its reply at once (to report configuration or command outcomes).
        private var followedUp = false

        init(
            brokerID: String, drainTimeout: Duration, backoff: Backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(5)),
            drainPollInterval: Duration = .milliseconds(50)
        ) {
            self.brokerID = brokerID
            self.drainTimeout = drainTimeout
            self.backoff = backoff
            self.drainPollInterval = drainPollInterval
        }

        /// A call that takes longer than this is abandoned and retried: waiting longer would let
        /// the lease expire unnoticed.
        var requestTimeout: Duration { max(.milliseconds(200), heartbeatInterval * 2) }

        /// Whether the last discovery list names an active broker other than this one.
        var othersActive: Bool { (view?.brokers ?? []).contains { $0.id != brokerID && $0.state == .active } }

        // MARK: The heartbeat loop

        mutating func start() -> [Action] {
            lease == .left ? [] : [.register]
        }

        /// After a `sleep`: the next call.
        mutating func woke() -> [Action] {
            switch lease {
            case .left: []
            case .unregistered: [.register]
            case .registered: [.heartbeat]
            }
        }

        /// The controller accepted the registration.
        mutating func registered(_ reply: LeaseReply) -> [Action] {
            guard lease != .left else { return [] }
            lease = .registered
            var actions = apply(reply) + [.log(.registered)]
            // Registered again mid-drain (the controller restarted): it must not send clients here.
            if case .requested = drain {
                actions.append(.requestDrain)
            } else {
                failures = 0
                actions.append(.sleep(heartbeatInterval))
            }
            return actions
        }

        /// The controller answered a heartbeat (or a drain request made by this loop).
        mutating func answered(_ reply: LeaseReply) -> [Action] {
            guard lease != .left else { return [] }
            failures = 0
            let actions = apply(reply)
            // Configuration or commands came: report the outcome at once rather than a heartbeat
            // later (once in a row, so a controller that keeps sending cannot make it spin).
            let report = !followedUp && actions.contains { if case .configure = $0 { true } else if case .execute = $0 { true } else { false } }
            followedUp = report
            return actions + [.sleep(report ? .zero : heartbeatInterval)]
        }

        /// The controller answered with an error.
        mutating func refused(_ error: TocsinError) -> [Action] {
            guard lease != .left else { return [] }
            if error.code == .unknownBroker || error.code == .staleIncarnation {
                // The controller restarted, or our lease expired (a long pause): register again.
                lease = .unregistered
                return [.log(.forgotten(reason: error.message)), .register]
            }
            if error.code == .notLeader {
                // A takeover takes a lease (seconds): ask again every heartbeat, not after a long
                // backoff, so this broker is not dead to the new leader by the time it asks.
                failures += 1
                let log: [Action] = failures == 1 || failures % 20 == 0 ? [.log(.noLeader(message: error.message))] : []
                return log + [.sleep(heartbeatInterval)]
            }
            // E.g. `broker_id_in_use`: another live broker has this id. Retry, since it may go away.
            return failed(.refused(code: error.code, message: error.message))
        }

        /// No answer (refused, timed out…). Keep serving clients; retry with backoff.
        mutating func unreachable(_ error: String) -> [Action] {
            guard lease != .left else { return [] }
            return failed(.unreachable(error: error))
        }

        private mutating func failed(_ fact: Fact) -> [Action] {
            failures += 1
            let log: [Action] = failures == 1 || failures % 20 == 0 ? [.log(fact)] : []
            return log + [.sleep(backoff.ceiling(attempt: failures))]
        }

        private mutating func apply(_ reply: LeaseReply) -> [Action] {
            guard reply.epoch >= highestEpoch else {
                // A deposed leader still answering: nothing it says counts.
                return [.log(.staleOrders(count: reply.commands.count, epoch: reply.epoch, highest: highestEpoch, reply: true))]
            }
            highestEpoch = reply.epoch
            if let cluster = reply.cluster {
                view = cluster
                viewVersion = reply.viewVersion
            }
            heartbeatInterval = .milliseconds(max(50, reply.heartbeatMillis))
            var actions: [Action] = []
            for order in reply.commands {
                if order.epoch < highestEpoch {
                    actions.append(.log(.staleOrders(count: 1, epoch: order.epoch, highest: highestEpoch, reply: false)))
                } else {
                    actions.append(.migrate(count: order.count, to: order.to, reason: order.reason))
                }
            }
            if let config = reply.config { actions.append(.configure(config)) }
            actions += reply.orders.map(Action.execute)
            return actions
        }

        // MARK: Drain and leave

        /// Graceful shutdown started. No drain when not registered, or when no other broker
        /// would take the clients.
        mutating func drainStarted() -> [Action] {
            guard lease == .registered, drain == .notRequested else {
                drain = .ended
                return [.drainEnded]
            }
            guard othersActive else {
                drain = .ended
                return [.log(.nothingToDrainTo), .drainEnded]
            }
            drain = .requested(deadline: nil)
            return [.requestDrain]
        }

        /// The controller accepted the drain: clients leave until `drainTimeout` from `now`.
        mutating func drainAccepted(_ reply: LeaseReply, identifiedSessions: Int, now: Duration) -> [Action] {
            guard case .requested = drain else { return [.drainEnded] }
            drain = .requested(deadline: now + drainTimeout)
            return apply(reply) + [.log(.draining(clients: identifiedSessions))] + drainProgress(identifiedSessions: identifiedSessions, now: now)
        }

        /// The drain request failed: the clients will fail over when the broker closes.
        mutating func drainFailed(_ error: String) -> [Action] {
            drain = .ended
            return [.log(.drainNotStarted(error: error)), .drainEnded]
        }

        /// How many identified sessions (the ones a drain can move) are left at `now`.
        mutating func drainProgress(identifiedSessions: Int, now: Duration) -> [Action] {
            guard case .requested(let deadline?) = drain else { return [.drainEnded] }
            let fact: Fact
            if identifiedSessions == 0 {
                fact = .drained
            } else if view != nil, !othersActive {
                fact = .nowhereLeftToDrainTo(clients: identifiedSessions)
            } else if now >= deadline {
                fact = .drainTimedOut(clients: identifiedSessions)
            } else {
                return [.sleep(drainPollInterval)]
            }
            drain = .ended
            return [.log(fact), .drainEnded]
        }

        /// The member stops: deregister if the controller holds this incarnation.
        mutating func shutdown() -> [Action] {
            defer { lease = .left }
            return lease == .registered ? [.deregister] : []
        }

        mutating func deregisterFailed(_ error: String) -> [Action] {
            [.log(.deregisterFailed(error: error))]
        }
    }
}
