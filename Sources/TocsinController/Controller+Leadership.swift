import Logging
import TocsinCore
import TocsinStore

/// Several controllers on one database: the leader election (`LeaderElection` decides, the
/// ledger's lease row is the truth) and the registry the leader shares with the followers.
extension Controller {
    /// The epoch this controller leads with now; `not_leader` (naming the leader when known)
    /// when it follows. A controller without a ledger always leads, with epoch 0.
    func leadingEpoch(at now: ClusterTime) throws(TocsinError) -> Int64 {
        guard ledger != nil else { return 0 }
        let (epoch, leader) = election.withLock { ($0.leadingEpoch(at: now), $0.leaderURL) }
        if let epoch { return epoch }
        if let leader {
            throw TocsinError(.notLeader, "this controller does not lead; the leader is \(leader): send broker calls there", leader: leader)
        }
        throw TocsinError(.notLeader, "this controller does not lead, and no leader is known right now (an election is under way); retry shortly")
    }

    /// The leader's URL and epoch as this controller knows them at `now`.
    func leader(at now: ClusterTime, me: String?) -> (String?, Int64?) {
        guard ledger != nil else { return (me, 0) }
        return election.withLock { e in
            if let epoch = e.leadingEpoch(at: now) { return (me, epoch) }
            guard case .following(let leader, let epoch) = e.role else { return (nil, nil) }
            return (leader, epoch)
        }
    }

    /// Whether this controller leads now.
    public var isLeader: Bool { (try? leadingEpoch(at: now())) != nil }

    /// One tick with a ledger: claim the lease; a follower takes over the registry the leader
    /// wrote (to serve reads, or, when it has just won, to lead with); the leader expires leases,
    /// plans, and writes the registry, fenced by its epoch. A failed claim leaves the role to
    /// time: the leader stops at its own deadline.
    func leadershipTick(_ ledger: any ControllerLedger) async {
        // Not listening yet: a leader must be reachable at the URL it writes into the row.
        guard let url = advertisedURL.withLock({ $0 }) else { return }
        let sentAt = now()
        do {
            let claim = try await ledger.claimLeadership(holder: holder, url: url, lease: configuration.leaderLease)
            let leading = election.withLock { $0.leadingEpoch(at: now()) } != nil
            if !(claim.won && leading) {
                // Adopted before the election says "leading", so the first heartbeat finds its broker.
                let registry = try await ledger.loadRegistry()
                let at = now()
                machine.withLock { $0.adopt(registry, now: at) }
                try await loadControl(ledger)
            }
            try await refreshRegistration(ledger)
            let at = now()
            carryOut(election.withLock { $0.claimed(claim, sentAt: sentAt, now: at) })
            guard let epoch = election.withLock({ $0.leadingEpoch(at: now()) }) else {
                ledgerFailures.store(0, ordering: .relaxed)
                return
            }
            tick()
            let live = machine.withLock { $0.live }.map(BrokerSummary.init)
            if try await !ledger.saveRegistry(live, holder: holder, epoch: epoch) {
                carryOut(election.withLock { $0.superseded() })
            }
            ledgerFailures.store(0, ordering: .relaxed)
        } catch {
            let failures = ledgerFailures.add(1, ordering: .relaxed).newValue
            if failures == 1 || failures % 20 == 0 {
                logger.warning("cannot reach the store to claim or renew leadership", metadata: ["error": "\(error)", "failures": "\(failures)"])
            }
            let at = now()
            carryOut(election.withLock { $0.tick(now: at) })
        }
    }

    /// Keeps this controller in the ledger's registry of controllers: at most once a second,
    /// for three leader leases.
    private func refreshRegistration(_ ledger: any ControllerLedger) async throws {
        let at = now()
        guard lastRefresh.withLock({ last in last.map { at - $0 >= .seconds(1) } ?? true }) else { return }
        try await ledger.refreshController(selfSummary(), lease: configuration.leaderLease * 3)
        lastRefresh.withLock { $0 = at }
    }

    private func carryOut(_ actions: [LeaderElection.Action]) {
        for action in actions {
            switch action {
            case .startLeading(let epoch):
                logger.notice("leading the controllers", metadata: ["epoch": "\(epoch)", "brokers": "\(machine.withLock { $0.live.count })"])
                metrics.leader.record(1)
                noteForDashboard("leader", subject: holder, "this controller leads (epoch \(epoch))")
            case .stopLeading(let epoch, let reason):
                logger.warning("stopped leading the controllers", metadata: ["epoch": "\(epoch)", "reason": "\(reason.rawValue)"])
                metrics.leader.record(0)
                noteForDashboard("leader", subject: holder, "this controller stopped leading (epoch \(epoch), \(reason.rawValue))")
            }
        }
    }
}
