import Logging
import Metrics
import NIOCore
public import ServiceLifecycle
import Synchronization
import TocsinCore

/// Notices event loops that stop turning: every `interval` it queues a no-op on each loop and
/// measures how late it runs. Every connection on a loop waits while something blocks it (a
/// handler, or with `TOCSIN_TASK_EXECUTOR=event-loops` a task that does not yield), so a late
/// probe is what "all clients of this broker lag together" looks like from inside.
///
/// A probe that runs `threshold` or more late logs a warning with its delay; one still waiting
/// after `threshold` logs at once (the loop may be stuck for good) and once more when it finally
/// runs. Each such loop counts once in `tocsin_event_loop_stalls_total`; every probe's delay
/// goes to the `tocsin_event_loop_delay_seconds` histogram.
public final class EventLoopWatch: Service, Sendable {
    public let interval: Duration
    public let threshold: Duration
    let loops: [any EventLoop]
    private let logger: Logger
    private let delays = Timer(label: "tocsin_event_loop_delay_seconds")
    private let stallsMetric = Counter(label: "tocsin_event_loop_stalls_total")

    private struct Probe {
        var sentAt: ContinuousClock.Instant
        /// Already reported as stuck while it waited.
        var reported = false
    }

    private struct State {
        /// Per loop, the probe that has not run yet.
        var pending: [Probe?]
        var stallsByLoop: [Int]
        var longest: Duration = .zero
    }

    private let state: Mutex<State>

    public init(group: any EventLoopGroup, interval: Duration = .seconds(1), threshold: Duration = .milliseconds(200), logger: Logger) {
        let loops = Array(group.makeIterator())
        self.loops = loops
        self.interval = interval
        self.threshold = threshold
        self.logger = logger
        self.state = Mutex(State(pending: Array(repeating: nil, count: loops.count), stallsByLoop: Array(repeating: 0, count: loops.count)))
    }

    /// Stalls seen since start (a loop late or stuck by `threshold` or more, once per stall).
    public var stalls: Int { state.withLock { $0.stallsByLoop.reduce(0, +) } }
    /// The same for one loop (its index in the group's order).
    public func stalls(ofLoop index: Int) -> Int { state.withLock { $0.stallsByLoop[index] } }
    /// The longest delay a probe has had.
    public var longestDelay: Duration { state.withLock { $0.longest } }

    /// Probes every `interval` until graceful shutdown.
    public func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                self.probe(now: .now)
                try? await Task.sleep(for: self.interval)
            }
        }
    }

    /// Queues a probe on each loop that has none waiting, and reports those waiting too long.
    func probe(now: ContinuousClock.Instant) {
        for (index, loop) in loops.enumerated() {
            enum Step { case send, wait, stuck(Duration) }
            let step = state.withLock { s -> Step in
                guard var probe = s.pending[index] else {
                    s.pending[index] = Probe(sentAt: now)
                    return .send
                }
                let waited = now - probe.sentAt
                guard waited >= threshold, !probe.reported else { return .wait }
                probe.reported = true
                s.pending[index] = probe
                s.stallsByLoop[index] += 1
                s.longest = max(s.longest, waited)
                return .stuck(waited)
            }
            switch step {
            case .send:
                loop.execute { self.ran(index) }
            case .wait:
                break
            case .stuck(let waited):
                stallsMetric.increment()
                logger.warning(
                    "an event loop is blocked: every connection on it is waiting",
                    metadata: ["loop": "\(index)", "blockedMs": "\(waited.milliseconds)"])
            }
        }
    }

    private func ran(_ index: Int) {
        let now = ContinuousClock.now
        let outcome = state.withLock { s -> (delay: Duration, newStall: Bool)? in
            guard let probe = s.pending[index] else { return nil }
            s.pending[index] = nil
            let delay = now - probe.sentAt
            s.longest = max(s.longest, delay)
            let newStall = delay >= threshold && !probe.reported
            if newStall { s.stallsByLoop[index] += 1 }
            return (delay, newStall)
        }
        guard let (delay, newStall) = outcome else { return }
        delays.recordNanoseconds(delay.nanoseconds)
        guard delay >= threshold else { return }
        if newStall { stallsMetric.increment() }
        logger.warning(
            "an event loop was blocked: a task queued to it ran late, and so did every connection on it",
            metadata: ["loop": "\(index)", "lateMs": "\(delay.milliseconds)"])
    }
}
