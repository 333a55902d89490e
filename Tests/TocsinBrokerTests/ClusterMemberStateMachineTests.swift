import Testing
import TocsinCore

@testable import TocsinBroker

/// A broker's membership decisions driven directly, with literal replies and times (no controller,
/// no sockets): registration, heartbeats, refusals and backoff, drain.
struct ClusterMemberStateMachineTests {
    typealias Machine = ClusterMember.StateMachine

    static func machine() -> Machine {
        Machine(brokerID: "b1", drainTimeout: .seconds(10), backoff: Backoff(initial: .milliseconds(200), maximum: .seconds(5)))
    }

    static func broker(_ id: String, state: BrokerState = .active) -> BrokerSummary {
        BrokerSummary(
            id: id, incarnation: "\(id)-1", webSocketURL: "ws://\(id).example/v1/ws", httpURL: "http://\(id).example", region: "eu",
            location: nil, capacity: 100, state: state, load: .zero)
    }

    /// A lease reply naming `brokers` (b1 and b2 by default), every 300 ms, with `commands`.
    static func reply(_ brokers: [BrokerSummary] = [broker("b1"), broker("b2")], commands: [MigrateCommand] = []) -> LeaseReply {
        LeaseReply(
            leaseMillis: 3000, heartbeatMillis: 300, commands: commands,
            cluster: ClusterView(controller: "http://controller.example", brokers: brokers))
    }

    static let unknown = TocsinError(.unknownBroker, "the lease of broker \"b1\" has expired; register again")

    /// A registered machine whose heartbeats run.
    static func registered() -> Machine {
        var m = machine()
        #expect(m.start() == [.register])
        #expect(m.registered(reply()) == [.log(.registered), .sleep(.milliseconds(300))])
        #expect(m.woke() == [.heartbeat])
        return m
    }

    @Test func registersThenHeartbeatsAtTheIntervalTheControllerSays() {
        var m = Self.registered()
        #expect(m.lease == .registered)
        #expect(m.requestTimeout == .milliseconds(600))
        #expect(m.view?.brokers.map(\.id) == ["b1", "b2"])
        let order = MigrateCommand(count: 7, to: Self.broker("b2"), reason: "rebalance")
        var beat = Self.reply(commands: [order])
        beat.heartbeatMillis = 10
        // Orders are carried out; the interval is at least 50 ms.
        #expect(m.answered(beat) == [.migrate(count: 7, to: Self.broker("b2"), reason: "rebalance"), .sleep(.milliseconds(50))])
        #expect(m.requestTimeout == .milliseconds(200))
        #expect(m.woke() == [.heartbeat])
    }

    @Test func configurationAndCommandsAreCarriedOutAndReportedAtOnceButNotInALoop() {
        var m = Self.registered()
        let order = CommandOrder(id: "cmd-1", kind: .snapshot, args: .object([:]), deadlineMillis: 10_000)
        let push = ConfigPush(version: 3, values: ["log.level": .string("debug")])
        var beat = Self.reply()
        beat.config = push
        beat.orders = [order]
        // Carried out, then the next heartbeat goes at once to report them.
        #expect(m.answered(beat) == [.configure(push), .execute(order), .sleep(.zero)])
        // The same again (a result lost on the way): carried out (the broker answers a repeat from
        // memory) but reported at the normal interval.
        #expect(m.answered(beat) == [.configure(push), .execute(order), .sleep(.milliseconds(300))])
        #expect(m.answered(Self.reply()) == [.sleep(.milliseconds(300))])
        // A reply from a deposed leader carries nothing out.
        var stale = beat
        stale.epoch = -1
        #expect(m.answered(stale).contains(.execute(order)) == false)
    }

    @Test func aHeartbeatAnsweredUnknownBrokerAfterExpiryRegistersAgainAtOnce() {
        var m = Self.registered()
        #expect(m.refused(Self.unknown) == [.log(.forgotten(reason: Self.unknown.message)), .register])
        #expect(m.lease == .unregistered)
        // A stale incarnation (the controller holds a successor) is the same: register again.
        #expect(m.registered(Self.reply()) == [.log(.registered), .sleep(.milliseconds(300))])
        let stale = TocsinError(.staleIncarnation, "replaced")
        #expect(m.refused(stale) == [.log(.forgotten(reason: "replaced")), .register])
        // A sleep interrupted meanwhile wakes to register, not to heartbeat.
        #expect(m.woke() == [.register])
    }

    @Test func failuresBackOffAreLoggedSparinglyAndResetOnSuccess() {
        var m = Self.registered()
        var sleeps: [Duration] = []
        var logged: [Int] = []
        for attempt in 1...20 {
            let actions = m.unreachable("connection refused")
            if actions.first == .log(.unreachable(error: "connection refused")) { logged.append(attempt) }
            guard case .sleep(let d)? = actions.last else {
                Issue.record("no sleep after failure \(attempt): \(actions)")
                return
            }
            sleeps.append(d)
            #expect(m.woke() == [.heartbeat])
        }
        #expect(logged == [1, 20])
        #expect(Array(sleeps.prefix(6)) == [400, 800, 1600, 3200, 5000, 5000].map { Duration.milliseconds($0) })
        #expect(m.failures == 20)
        // One answer resets the count: the next failure waits the shortest time and is logged.
        #expect(m.answered(Self.reply()) == [.sleep(.milliseconds(300))])
        #expect(m.failures == 0)
        let refusal = TocsinError(.brokerIDInUse, "held by another broker")
        #expect(m.refused(refusal) == [.log(.refused(code: .brokerIDInUse, message: "held by another broker")), .sleep(.milliseconds(400))])
        #expect(m.lease == .registered)
    }

    @Test func aRegistrationRefusedAsTakenRetriesWithoutRegistering() {
        var m = Self.machine()
        #expect(m.start() == [.register])
        let refusal = TocsinError(.brokerIDInUse, "held")
        #expect(m.refused(refusal) == [.log(.refused(code: .brokerIDInUse, message: "held")), .sleep(.milliseconds(400))])
        #expect(m.woke() == [.register])
        #expect(m.unreachable("timed out") == [.sleep(.milliseconds(800))])
        #expect(m.woke() == [.register])
    }

    @Test func reRegistrationMidDrainRequestsTheDrainAgain() {
        var m = Self.registered()
        #expect(m.drainStarted() == [.requestDrain])
        #expect(m.drainAccepted(Self.reply(), identifiedSessions: 5, now: .seconds(100)) == [.log(.draining(clients: 5)), .sleep(.milliseconds(50))])
        // The controller restarted mid-drain: register, then drain again before heartbeating.
        #expect(m.refused(Self.unknown) == [.log(.forgotten(reason: Self.unknown.message)), .register])
        #expect(m.registered(Self.reply()) == [.log(.registered), .requestDrain])
        #expect(m.answered(Self.reply()) == [.sleep(.milliseconds(300))])
        #expect(m.woke() == [.heartbeat])
        // The drain keeps its deadline.
        #expect(m.drainProgress(identifiedSessions: 3, now: .seconds(105)) == [.sleep(.milliseconds(50))])
        #expect(m.drainProgress(identifiedSessions: 3, now: .seconds(110)) == [.log(.drainTimedOut(clients: 3)), .drainEnded])
    }

    @Test func theDrainEndsWhenNoIdentifiedSessionRemain() {
        var m = Self.registered()
        #expect(m.drainStarted() == [.requestDrain])
        let order = MigrateCommand(count: 2, to: Self.broker("b2"), reason: "drain")
        #expect(
            m.drainAccepted(Self.reply(commands: [order]), identifiedSessions: 2, now: .seconds(1))
                == [.migrate(count: 2, to: Self.broker("b2"), reason: "drain"), .log(.draining(clients: 2)), .sleep(.milliseconds(50))])
        #expect(m.drainProgress(identifiedSessions: 1, now: .seconds(2)) == [.sleep(.milliseconds(50))])
        #expect(m.drainProgress(identifiedSessions: 0, now: .seconds(3)) == [.log(.drained), .drainEnded])
        #expect(m.drain == .ended)
        // Still registered: the member deregisters, once.
        #expect(m.shutdown() == [.deregister])
        #expect(m.shutdown() == [])
        #expect(m.woke() == [])
    }

    @Test func theDrainEndsWhenNoOtherActiveBrokerRemains() {
        var m = Self.registered()
        #expect(m.drainStarted() == [.requestDrain])
        #expect(m.drainAccepted(Self.reply(), identifiedSessions: 4, now: .seconds(1)) == [.log(.draining(clients: 4)), .sleep(.milliseconds(50))])
        // b2 starts draining too (the whole network is stopping): nowhere to send the rest.
        #expect(m.answered(Self.reply([Self.broker("b1", state: .draining), Self.broker("b2", state: .draining)])) == [.sleep(.milliseconds(300))])
        #expect(m.drainProgress(identifiedSessions: 4, now: .seconds(2)) == [.log(.nowhereLeftToDrainTo(clients: 4)), .drainEnded])
    }

    @Test func noDrainWithoutAnotherBrokerOrARegistrationOrWhenTheRequestFails() {
        var alone = Self.machine()
        _ = alone.start()
        _ = alone.registered(Self.reply([Self.broker("b1")]))
        #expect(alone.drainStarted() == [.log(.nothingToDrainTo), .drainEnded])

        var unregistered = Self.machine()
        _ = unregistered.start()
        #expect(unregistered.drainStarted() == [.drainEnded])
        #expect(unregistered.shutdown() == [])

        var failing = Self.registered()
        #expect(failing.drainStarted() == [.requestDrain])
        #expect(failing.drainFailed("connection refused") == [.log(.drainNotStarted(error: "connection refused")), .drainEnded])
        #expect(failing.shutdown() == [.deregister])
    }

    @Test func afterShutdownNothingMoreIsDone() {
        var m = Self.registered()
        #expect(m.shutdown() == [.deregister])
        #expect(m.registered(Self.reply()) == [])
        #expect(m.answered(Self.reply()) == [])
        #expect(m.unreachable("x") == [])
        #expect(m.refused(Self.unknown) == [])
        #expect(m.start() == [])
    }

    // MARK: Fencing

    /// A reply of the controller leading with `epoch`, with `orders` (each with its own epoch).
    static func reply(epoch: Int64, orders: [(count: Int, epoch: Int64)] = []) -> LeaseReply {
        var r = reply(commands: orders.map { MigrateCommand(count: $0.count, to: broker("b2"), reason: "rebalance", epoch: $0.epoch) })
        r.epoch = epoch
        return r
    }

    @Test func ordersOfTheHighestEpochSeenAreCarriedOutAndANewLeadersHigherEpochIsTaken() {
        var m = Self.registered()
        #expect(m.answered(Self.reply(epoch: 3, orders: [(5, 3)])) == [
            .migrate(count: 5, to: Self.broker("b2"), reason: "rebalance"), .sleep(.milliseconds(300)),
        ])
        #expect(m.highestEpoch == 3)
        // The next leader (epoch 4) took over.
        #expect(m.answered(Self.reply(epoch: 4, orders: [(6, 4)])) == [
            .migrate(count: 6, to: Self.broker("b2"), reason: "rebalance"), .sleep(.milliseconds(300)),
        ])
        #expect(m.highestEpoch == 4)
    }

    @Test func aDeposedLeadersReplyIsRefusedWholeAndCounted() {
        var m = Self.registered()
        _ = m.answered(Self.reply(epoch: 7))
        let before = m.view
        // Epoch 6 wakes up after a pause and still answers: neither its orders nor its list count.
        var stale = Self.reply(epoch: 6, orders: [(10, 6), (2, 6)])
        stale.cluster = ClusterView(controller: "http://old.example", brokers: [Self.broker("b1")])
        #expect(m.answered(stale) == [.log(.staleOrders(count: 2, epoch: 6, highest: 7, reply: true)), .sleep(.milliseconds(300))])
        #expect(m.view == before)
        #expect(m.highestEpoch == 7)
        // Registering through it is the same.
        #expect(m.registered(Self.reply(epoch: 5)).first == .log(.staleOrders(count: 0, epoch: 5, highest: 7, reply: true)))
    }

    @Test func anOrderWithALowerEpochThanItsReplyIsRefusedAndTheOthersCarriedOut() {
        var m = Self.registered()
        _ = m.answered(Self.reply(epoch: 9))
        #expect(m.answered(Self.reply(epoch: 9, orders: [(3, 8), (4, 9)])) == [
            .log(.staleOrders(count: 1, epoch: 8, highest: 9, reply: false)),
            .migrate(count: 4, to: Self.broker("b2"), reason: "rebalance"), .sleep(.milliseconds(300)),
        ])
    }

    @Test func aControllerRunningAloneIsEpochZeroAndAlwaysTaken() {
        var m = Self.registered()
        #expect(m.answered(Self.reply(epoch: 0, orders: [(1, 0)])) == [
            .migrate(count: 1, to: Self.broker("b2"), reason: "rebalance"), .sleep(.milliseconds(300)),
        ])
        #expect(m.highestEpoch == 0)
    }

    @Test func withNoLeaderTheBrokerAsksAgainEveryHeartbeatAndLogsOnceInTwenty() {
        var m = Self.registered()
        let none = TocsinError(.notLeader, "no leader is known right now")
        #expect(m.refused(none) == [.log(.noLeader(message: none.message)), .sleep(.milliseconds(300))])
        for _ in 2...19 { #expect(m.refused(none) == [.sleep(.milliseconds(300))]) }
        #expect(m.refused(none) == [.log(.noLeader(message: none.message)), .sleep(.milliseconds(300))])
        #expect(m.lease == .registered)
        // The new leader answers: back to heartbeats.
        #expect(m.answered(Self.reply(epoch: 2)) == [.sleep(.milliseconds(300))])
        #expect(m.failures == 0)
    }
}
