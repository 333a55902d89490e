import Testing

@testable import TocsinCore

/// One controller's election decisions driven directly, with literal claims and times: a lease
/// of 2 s given up 500 ms early, so a won claim sent at t leads until t + 1.5 s.
@Suite struct LeaderElectionTests {
    static func election() -> LeaderElection { LeaderElection(lease: .seconds(2), margin: .milliseconds(500)) }

    static func won(epoch: Int64) -> LeadershipClaim { LeadershipClaim(holder: "me", url: "http://a.example", epoch: epoch, won: true) }
    static func lost(epoch: Int64) -> LeadershipClaim { LeadershipClaim(holder: "other", url: "http://b.example", epoch: epoch, won: false) }

    @Test func aWonClaimLeadsUntilTheLeaseLessTheMarginCountedFromWhenItWasSent() {
        var e = Self.election()
        #expect(e.leadingEpoch(at: .zero) == nil)
        #expect(e.claimed(Self.won(epoch: 4), sentAt: .milliseconds(100), now: .milliseconds(300)) == [.startLeading(epoch: 4)])
        #expect(e.leadingEpoch(at: .milliseconds(300)) == 4)
        // From the send, not the answer: the store may have started the lease at once.
        #expect(e.leadingEpoch(at: .milliseconds(1_599)) == 4)
        #expect(e.leadingEpoch(at: .milliseconds(1_600)) == nil)
        #expect(e.leaderURL == nil)
    }

    @Test func renewalsExtendTheDeadlineWithTheSameEpochAndSayNothing() {
        var e = Self.election()
        _ = e.claimed(Self.won(epoch: 4), sentAt: .zero, now: .milliseconds(10))
        #expect(e.claimed(Self.won(epoch: 4), sentAt: .seconds(1), now: .milliseconds(1_010)) == [])
        #expect(e.role == .leading(epoch: 4, until: .milliseconds(2_500)))
        // A slow answer to an older claim never shortens the deadline.
        #expect(e.claimed(Self.won(epoch: 4), sentAt: .milliseconds(900), now: .milliseconds(1_020)) == [])
        #expect(e.role == .leading(epoch: 4, until: .milliseconds(2_500)))
        #expect(e.tick(now: .milliseconds(2_499)) == [])
    }

    @Test func aLeaderThatCannotRenewStopsAtItsOwnDeadlineBeforeTheStoreCouldGiveTheLeaseAway() {
        var e = Self.election()
        _ = e.claimed(Self.won(epoch: 7), sentAt: .seconds(10), now: .milliseconds(10_050))
        // The database is unreachable: claims fail, only time passes.
        #expect(e.tick(now: .milliseconds(11_000)) == [])
        #expect(e.tick(now: .milliseconds(11_500)) == [.stopLeading(epoch: 7, reason: .leaseLapsed)])
        #expect(e.leadingEpoch(at: .milliseconds(11_500)) == nil)
        // The store's lease ran from 10 s at the earliest to 12 s: another may lead from then.
        #expect(e.tick(now: .seconds(12)) == [])
    }

    @Test func anAnswerLaterThanTheDeadlineDoesNotMakeALeader() {
        var e = Self.election()
        // Sent at 0, answered at 1.6 s (a paused process): the lease may be nearly gone.
        #expect(e.claimed(Self.won(epoch: 1), sentAt: .zero, now: .milliseconds(1_600)) == [])
        #expect(e.leadingEpoch(at: .milliseconds(1_600)) == nil)
        // While leading, the same late answer ends it.
        _ = e.claimed(Self.won(epoch: 1), sentAt: .seconds(2), now: .seconds(2))
        #expect(e.claimed(Self.won(epoch: 1), sentAt: .seconds(2), now: .milliseconds(3_600)) == [.stopLeading(epoch: 1, reason: .leaseLapsed)])
    }

    @Test func aLostClaimFollowsTheHolderAndEndsLeadingAtOnce() {
        var e = Self.election()
        #expect(e.claimed(Self.lost(epoch: 3), sentAt: .zero, now: .zero) == [])
        #expect(e.role == .following(leader: "http://b.example", epoch: 3))
        #expect(e.leaderURL == "http://b.example")
        _ = e.claimed(Self.won(epoch: 4), sentAt: .seconds(5), now: .seconds(5))
        // Paused past its deadline, the other took over (epoch 5): this one learns it in its next claim.
        #expect(e.claimed(Self.lost(epoch: 5), sentAt: .seconds(9), now: .seconds(9)) == [.stopLeading(epoch: 4, reason: .superseded)])
        #expect(e.leadingEpoch(at: .seconds(9)) == nil)
        #expect(e.leaderURL == "http://b.example")
    }

    @Test func takingTheLeaseBackAfterAnotherHeldItIsANewEpoch() {
        var e = Self.election()
        _ = e.claimed(Self.won(epoch: 4), sentAt: .zero, now: .zero)
        #expect(e.claimed(Self.won(epoch: 6), sentAt: .seconds(1), now: .seconds(1)) == [
            .stopLeading(epoch: 4, reason: .superseded), .startLeading(epoch: 6),
        ])
        #expect(e.leadingEpoch(at: .seconds(1)) == 6)
    }

    @Test func aFencedWriteThatFindsAnotherEpochEndsLeading() {
        var e = Self.election()
        _ = e.claimed(Self.won(epoch: 2), sentAt: .zero, now: .zero)
        #expect(e.superseded() == [.stopLeading(epoch: 2, reason: .superseded)])
        #expect(e.leadingEpoch(at: .zero) == nil)
        #expect(e.superseded() == [])
    }
}
