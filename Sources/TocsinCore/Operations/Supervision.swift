/// Keeping a host's processes alive, free of I/O (`tocsin dev`, `tocsin supervise`): fed what
/// happened to each worker — it started, exited, answered a health check or did not — and the
/// time, it says whom to restart, kill or give up on. The owner runs the processes, the checks
/// and the clock.
///
/// Rules:
/// - a worker that exits without being asked to is restarted: at once the first time, then
///   after the policy's backoff (1 s, 2 s, 4 s … up to 30 s) for each restart in the last
///   `crashLoopWindow`;
/// - a worker that fails `unhealthyAfter` health checks in a row (it hangs, or is paused) is
///   killed with SIGKILL, then restarted as above;
/// - more than `crashLoopLimit` restarts within `crashLoopWindow` is a crash loop: the worker is
///   given up on (reported, not restarted; the operator fixes the cause and restarts the supervisor);
/// - a worker stopped on purpose (`stopping`: a scale-in, Ctrl-C) is never restarted.
public struct Supervision: Sendable {
    public struct Policy: Sendable, Hashable {
        /// Failed health checks in a row that make a live worker dead.
        public var unhealthyAfter = 3
        public var backoff = Backoff(initial: .seconds(1), maximum: .seconds(30))
        public var crashLoopLimit = 5
        public var crashLoopWindow: Duration = .seconds(60)

        public init() {}
    }

    public enum State: Sendable, Hashable {
        /// Started at this time (since then, `failures` health checks failed in a row).
        case running(since: ClusterTime, failures: Int)
        /// Killed for not answering: restarted once its exit is seen.
        case killed
        /// Dead; restarted at this time.
        case waiting(until: ClusterTime)
        /// A start was ordered and has not been reported yet.
        case starting
        /// Stopped on purpose: left alone.
        case stopped
        /// Crash loop: left alone.
        case gaveUp
    }

    public enum Action: Sendable, Hashable {
        /// Start the worker (again).
        case start(String)
        /// SIGKILL the worker: it stopped answering.
        case kill(String, failedChecks: Int)
        /// The worker restarts too often: report it; it is not restarted.
        case giveUp(String, restarts: Int, within: Duration)
    }

    public let policy: Policy
    public private(set) var workers: [String: State] = [:]
    /// When each worker was restarted, within the crash-loop window.
    public private(set) var restarts: [String: [ClusterTime]] = [:]
    /// Restarts ordered in all.
    public private(set) var totalRestarts = 0

    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    /// A worker was started (first start or restart) at `now`.
    public mutating func started(_ id: String, now: ClusterTime) {
        workers[id] = .running(since: now, failures: 0)
    }

    /// A start failed: try again after the backoff.
    public mutating func startFailed(_ id: String, now: ClusterTime) -> [Action] {
        scheduleRestart(id, now: now)
    }

    /// A health check answered (`ok`) or not.
    public mutating func checked(_ id: String, ok: Bool, now: ClusterTime) -> [Action] {
        guard case .running(let since, let failures) = workers[id] else { return [] }
        if ok {
            workers[id] = .running(since: since, failures: 0)
            return []
        }
        let count = failures + 1
        guard count >= policy.unhealthyAfter else {
            workers[id] = .running(since: since, failures: count)
            return []
        }
        workers[id] = .killed
        return [.kill(id, failedChecks: count)]
    }

    /// The worker's process exited (crashed, was killed, or stopped on purpose).
    public mutating func exited(_ id: String, now: ClusterTime) -> [Action] {
        switch workers[id] {
        case .stopped, .gaveUp, .waiting, nil: return []
        case .running, .killed, .starting: return scheduleRestart(id, now: now)
        }
    }

    /// The worker is being stopped on purpose; its exit is not a crash.
    public mutating func stopping(_ id: String) {
        workers[id] = .stopped
    }

    /// Forgets a worker (removed for good).
    public mutating func remove(_ id: String) {
        workers[id] = nil
        restarts[id] = nil
    }

    /// The restarts that are due at `now`.
    public mutating func tick(now: ClusterTime) -> [Action] {
        var actions: [Action] = []
        for (id, state) in workers.sorted(by: { $0.key < $1.key }) {
            guard case .waiting(let until) = state, until <= now else { continue }
            workers[id] = .starting
            actions.append(.start(id))
        }
        return actions
    }

    private mutating func scheduleRestart(_ id: String, now: ClusterTime) -> [Action] {
        var recent = (restarts[id] ?? []).filter { now - $0 < policy.crashLoopWindow }
        guard recent.count < policy.crashLoopLimit else {
            workers[id] = .gaveUp
            restarts[id] = recent
            return [.giveUp(id, restarts: recent.count, within: policy.crashLoopWindow)]
        }
        let delay: Duration = recent.isEmpty ? .zero : policy.backoff.ceiling(attempt: recent.count - 1)
        recent.append(now)
        restarts[id] = recent
        totalRestarts += 1
        if delay == .zero {
            workers[id] = .starting
            return [.start(id)]
        }
        workers[id] = .waiting(until: now + delay)
        return []
    }
}

/// A process a supervisor runs, as the chaos API lists it (`GET /v1/workers`).
public struct WorkerSummary: Sendable, Hashable {
    /// `controller` or `broker`.
    public var role: String
    public var id: String
    public var pid: Int32
    public var url: String
    /// 1 for the first start, +1 per restart.
    public var incarnation: Int
    /// `running`, `restarting`, `stopped` (on purpose) or `gave-up` (crash loop).
    public var state: String

    public init(role: String, id: String, pid: Int32, url: String, incarnation: Int, state: String) {
        self.role = role
        self.id = id
        self.pid = pid
        self.url = url
        self.incarnation = incarnation
        self.state = state
    }

    public var json: JSONValue {
        .object([
            "role": .string(role), "id": .string(id), "pid": .int(Int64(pid)), "url": .string(url), "incarnation": .int(Int64(incarnation)),
            "state": .string(state),
        ])
    }
}
