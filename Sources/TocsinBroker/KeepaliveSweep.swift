import NIOCore
import Synchronization

/// Something the keepalive sweep visits once per period (a WebSocket connection).
protocol KeepaliveTarget: AnyObject {
    /// Its turn came: about one period since the last (the first time, up to one period after
    /// it joined).
    func keepaliveDue()
}

/// The keepalive clock of every WebSocket connection on one event loop: one timer per loop
/// instead of one per connection (a NIO timer with its promise and closure costs about 250
/// bytes, a thirtieth of an idle connection). The connections are dealt round-robin into
/// `slots` groups and one group is visited every period / slots, so each connection's turn
/// comes once per period and a loop never visits all its connections in one tick (a reconnect
/// storm joins thousands at once). The timer runs only while there are connections.
///
/// Used only on its event loop.
final class KeepaliveSweep<Target: KeepaliveTarget> {
    let eventLoop: any EventLoop
    let period: Duration
    let slots: Int
    private var groups: [[ObjectIdentifier: Target]]
    /// The group visited next.
    private var next = 0
    /// Joins so far, which deal the next one's slot.
    private var joined = 0
    private(set) var count = 0
    private var timer: Scheduled<Void>?

    init(eventLoop: any EventLoop, period: Duration, slots: Int = 30) {
        precondition(slots >= 1 && period > .zero)
        self.eventLoop = eventLoop
        self.period = period
        self.slots = slots
        self.groups = Array(repeating: [:], count: slots)
    }

    /// Whether the timer is armed (it is exactly while there are connections).
    var isRunning: Bool { timer != nil }

    /// Joins the sweep; returns its slot, which `remove` takes back.
    func add(_ target: Target) -> Int {
        eventLoop.preconditionInEventLoop()
        let slot = joined % slots
        joined &+= 1
        if groups[slot].updateValue(target, forKey: ObjectIdentifier(target)) == nil { count += 1 }
        if timer == nil { scheduleStep() }
        return slot
    }

    func remove(_ target: Target, slot: Int) {
        eventLoop.preconditionInEventLoop()
        guard groups[slot].removeValue(forKey: ObjectIdentifier(target)) != nil else { return }
        count -= 1
        if count == 0 {
            timer?.cancel()
            timer = nil
        }
    }

    private func scheduleStep() {
        let step = NIOLoopBound(self, eventLoop: eventLoop)
        timer = eventLoop.scheduleTask(in: .nanoseconds(period.nanoseconds / Int64(slots))) { step.value.step() }
    }

    private func step() {
        timer = nil
        let due = groups[next]
        next = (next + 1) % slots
        // A target may leave (close) while visited: `due` is a copy, `groups` changes.
        for target in due.values { target.keepaliveDue() }
        if count > 0, timer == nil { scheduleStep() }
    }
}

/// One keepalive sweep per event loop, made on first use.
final class KeepaliveSweeps<Target: KeepaliveTarget>: Sendable {
    let period: Duration
    private let sweeps = Mutex<[ObjectIdentifier: NIOLoopBound<KeepaliveSweep<Target>>]>([:])

    init(period: Duration) {
        self.period = period
    }

    /// The sweep of `eventLoop`; call on it.
    func sweep(on eventLoop: any EventLoop) -> KeepaliveSweep<Target> {
        let period = self.period
        let bound = sweeps.withLock { sweeps in
            let key = ObjectIdentifier(eventLoop)
            if let bound = sweeps[key] { return bound }
            let bound = NIOLoopBound(KeepaliveSweep<Target>(eventLoop: eventLoop, period: period), eventLoop: eventLoop)
            sweeps[key] = bound
            return bound
        }
        return bound.value
    }
}
