/// What one claim of the leadership lease found in the store: the lease row after the claim.
///
/// The store runs the claim as one statement on its own clock: the row is taken (or renewed)
/// when this controller holds it or its lease has run out, and then `won` is true; otherwise
/// the row is left as it is and names the controller that holds it.
public struct LeadershipClaim: Sendable, Hashable {
    /// The controller holding the lease (its holder id), nil when nobody ever held it.
    public var holder: String?
    /// That controller's advertised HTTP URL.
    public var url: String?
    /// The fencing epoch: +1 every time the lease changes hands.
    public var epoch: Int64
    /// Whether this controller holds the lease now.
    public var won: Bool

    public init(holder: String?, url: String?, epoch: Int64, won: Bool) {
        self.holder = holder
        self.url = url
        self.epoch = epoch
        self.won = won
    }
}

/// One controller's view of the leader election, free of I/O: am I the leader now?
///
/// Every controller claims the lease row in the store every tick (`LeadershipClaim`); the store
/// gives the row to one controller at a time, for `lease` on the *database's* clock, and bumps
/// the fencing epoch whenever it changes hands. This machine turns those answers into a role,
/// on the controller's own monotonic clock (`now`, from any origin):
///
/// - a won claim sent at `sentAt` makes this controller lead until `sentAt + lease - margin`.
///   The database started the lease at or after `sentAt`, so this deadline passes before the
///   row can expire there and be taken by another controller — even when the renewals then
///   stop coming (database unreachable, this process paused): a leader that cannot renew stops
///   acting as one before anyone else can start;
/// - a lost claim, or `superseded()` (a fenced write found another epoch), ends leading at once;
/// - `tick(now:)` ends leading when the deadline has passed; `leadingEpoch(at:)` answers the
///   question for any moment, so a request is never served on a lapsed lease even between ticks.
public struct LeaderElection: Sendable, Hashable {
    public enum Role: Sendable, Hashable {
        /// Another controller leads (`leader`: its URL, when known), or nobody does.
        case following(leader: String?, epoch: Int64?)
        /// This controller leads with `epoch` until `until` (its own clock).
        case leading(epoch: Int64, until: ClusterTime)
    }

    /// Why leading ended.
    public enum StepDown: String, Sendable, Hashable {
        /// No renewal arrived in time (the database is unreachable, or this process was paused).
        case leaseLapsed = "lease_lapsed"
        /// Another controller holds the lease.
        case superseded
    }

    /// What changed, for the controller to carry out (load the registry, log, set the gauge).
    public enum Action: Sendable, Hashable {
        case startLeading(epoch: Int64)
        case stopLeading(epoch: Int64, reason: StepDown)
    }

    /// How long the store's lease lasts (what each claim asks for).
    public let lease: Duration
    /// How much sooner than the store this controller gives its lease up (clock rates, scheduling).
    public let margin: Duration
    public private(set) var role: Role = .following(leader: nil, epoch: nil)

    public init(lease: Duration, margin: Duration) {
        precondition(margin >= .zero && margin < lease, "LeaderElection margin must be in 0..<lease, got \(margin) of \(lease)")
        self.lease = lease
        self.margin = margin
    }

    /// The epoch this controller leads with at `now`, or nil when it does not lead then.
    public func leadingEpoch(at now: ClusterTime) -> Int64? {
        guard case .leading(let epoch, let until) = role, now < until else { return nil }
        return epoch
    }

    /// The leader's URL as last known while following (nil while leading: it is this one).
    public var leaderURL: String? {
        guard case .following(let leader, _) = role else { return nil }
        return leader
    }

    /// The store answered a claim sent at `sentAt`.
    public mutating func claimed(_ claim: LeadershipClaim, sentAt: ClusterTime, now: ClusterTime) -> [Action] {
        guard claim.won else {
            let stopped = stop(.superseded)
            role = .following(leader: claim.url, epoch: claim.epoch)
            return stopped
        }
        let until = sentAt + lease - margin
        // An answer that took longer than the lease proves nothing about now.
        guard now < until else { return tick(now: now) }
        if case .leading(let epoch, let old) = role, epoch == claim.epoch {
            role = .leading(epoch: epoch, until: max(old, until))
            return []
        }
        let stopped = stop(.superseded)
        role = .leading(epoch: claim.epoch, until: until)
        return stopped + [.startLeading(epoch: claim.epoch)]
    }

    /// A fenced write found that another controller took the lease: stop leading now.
    public mutating func superseded() -> [Action] {
        let stopped = stop(.superseded)
        if case .leading(let epoch, _) = role { role = .following(leader: nil, epoch: epoch) }
        return stopped
    }

    /// Time passed (a claim failed, or a tick went by): stop leading once the deadline has passed.
    public mutating func tick(now: ClusterTime) -> [Action] {
        guard case .leading(let epoch, let until) = role, now >= until else { return [] }
        role = .following(leader: nil, epoch: epoch)
        return [.stopLeading(epoch: epoch, reason: .leaseLapsed)]
    }

    private func stop(_ reason: StepDown) -> [Action] {
        guard case .leading(let epoch, _) = role else { return [] }
        return [.stopLeading(epoch: epoch, reason: reason)]
    }
}
