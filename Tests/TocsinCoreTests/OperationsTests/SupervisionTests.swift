import Testing
import TocsinCore

/// The supervisor's rules on a manual clock: restart at once then with backoff, kill what stops
/// answering, give up on a crash loop, leave alone what was stopped on purpose.
@Suite struct SupervisionTests {
    @Test func restartsAtOnceThenBacksOffThenGivesUpOnACrashLoop() {
        var s = Supervision()
        s.started("b1", now: .zero)
        #expect(s.exited("b1", now: .seconds(1)) == [.start("b1")])
        s.started("b1", now: .seconds(1))
        // The second crash in the window waits 1 s, the third 2 s, the fourth 4 s, the fifth 8 s.
        var now: Duration = .seconds(2)
        for delay in [1, 2, 4, 8] {
            #expect(s.exited("b1", now: now).isEmpty)
            #expect(s.tick(now: now + .seconds(delay) - .milliseconds(1)).isEmpty)
            #expect(s.tick(now: now + .seconds(delay)) == [.start("b1")])
            now = now + .seconds(delay)
            s.started("b1", now: now)
        }
        #expect(s.totalRestarts == 5)
        // A sixth crash within 60 s of the first: given up.
        #expect(s.exited("b1", now: now) == [.giveUp("b1", restarts: 5, within: .seconds(60))])
        #expect(s.workers["b1"] == .gaveUp)
        #expect(s.tick(now: now + .seconds(600)).isEmpty)
        #expect(s.exited("b1", now: now + .seconds(601)).isEmpty)
    }

    @Test func crashesSpreadOutAreRestartedAtOnceForever() {
        var s = Supervision()
        var now: Duration = .zero
        for _ in 0..<20 {
            s.started("b1", now: now)
            now += .seconds(61)
            #expect(s.exited("b1", now: now) == [.start("b1")])
        }
        #expect(s.totalRestarts == 20)
    }

    @Test func aWorkerThatStopsAnsweringIsKilledThenRestarted() {
        var s = Supervision()
        s.started("b1", now: .zero)
        #expect(s.checked("b1", ok: false, now: .seconds(1)).isEmpty)
        #expect(s.checked("b1", ok: false, now: .seconds(2)).isEmpty)
        // An answer resets the count.
        #expect(s.checked("b1", ok: true, now: .seconds(3)).isEmpty)
        #expect(s.checked("b1", ok: false, now: .seconds(4)).isEmpty)
        #expect(s.checked("b1", ok: false, now: .seconds(5)).isEmpty)
        #expect(s.checked("b1", ok: false, now: .seconds(6)) == [.kill("b1", failedChecks: 3)])
        // Checks of a killed worker count for nothing; its exit restarts it.
        #expect(s.checked("b1", ok: false, now: .seconds(7)).isEmpty)
        #expect(s.exited("b1", now: .seconds(7)) == [.start("b1")])
    }

    @Test func aWorkerStoppedOnPurposeIsLeftAlone() {
        var s = Supervision()
        s.started("b1", now: .zero)
        s.stopping("b1")
        #expect(s.exited("b1", now: .seconds(1)).isEmpty)
        #expect(s.tick(now: .seconds(100)).isEmpty)
        #expect(s.checked("b1", ok: false, now: .seconds(1)).isEmpty)
    }

    @Test func aFailedStartIsTriedAgainWithBackoff() {
        var s = Supervision()
        s.started("b1", now: .zero)
        #expect(s.exited("b1", now: .seconds(1)) == [.start("b1")])
        #expect(s.startFailed("b1", now: .seconds(1)).isEmpty)
        #expect(s.tick(now: .seconds(2)) == [.start("b1")])
    }
}

/// The autoscaler on a manual clock and made-up load figures.
@Suite struct AutoscalerTests {
    static func broker(_ id: String, clients: Int, capacity: Int = 100, state: BrokerState = .active, deliveries: Double = 0) -> BrokerSummary {
        BrokerSummary(
            id: id, incarnation: "i", webSocketURL: "ws://h:1/v1/ws", httpURL: "http://h:1", region: "r", location: nil, capacity: capacity, state: state,
            load: BrokerLoad(connections: clients, deliveriesPerSecond: deliveries))
    }

    static func policy() -> Autoscaler.Policy {
        var p = Autoscaler.Policy()
        p.minimum = 1
        p.maximum = 3
        p.sustain = .seconds(3)
        p.cooldown = .seconds(10)
        return p
    }

    @Test func addsABrokerWhenLoadStaysHighAndWaitsForIt() {
        var a = Autoscaler(policy: Self.policy())
        let busy = [Self.broker("b1", clients: 90)]
        #expect(a.observe(busy, running: 1, now: .zero) == .hold)
        #expect(a.observe(busy, running: 1, now: .seconds(2)) == .hold)
        #expect(a.observe(busy, running: 1, now: .seconds(3)) == .addBroker(count: 2))
        // Until the new one registers, and within the cooldown, nothing more.
        #expect(a.observe(busy, running: 2, now: .seconds(20)) == .hold)
        let two = [Self.broker("b1", clients: 90), Self.broker("b2", clients: 90)]
        #expect(a.observe(two, running: 2, now: .seconds(21)) == .hold)
        #expect(a.observe(two, running: 2, now: .seconds(24)) == .addBroker(count: 3))
        let three = two + [Self.broker("b3", clients: 90)]
        // At the maximum: hold however busy.
        for t in 30..<60 { #expect(a.observe(three, running: 3, now: .seconds(Int64(t))) == .hold) }
    }

    @Test func aShortSpikeAddsNothing() {
        var a = Autoscaler(policy: Self.policy())
        #expect(a.observe([Self.broker("b1", clients: 95)], running: 1, now: .zero) == .hold)
        #expect(a.observe([Self.broker("b1", clients: 50)], running: 1, now: .seconds(2)) == .hold)
        #expect(a.observe([Self.broker("b1", clients: 95)], running: 1, now: .seconds(4)) == .hold)
        #expect(a.observe([Self.broker("b1", clients: 95)], running: 1, now: .seconds(6)) == .hold)
    }

    @Test func drainsTheLeastLoadedWhenTheRestCanTakeItAndWaitsForItToLeave() {
        var a = Autoscaler(policy: Self.policy())
        let quiet = [Self.broker("b1", clients: 20), Self.broker("b2", clients: 5), Self.broker("b3", clients: 30)]
        #expect(a.observe(quiet, running: 3, now: .zero) == .hold)
        #expect(a.observe(quiet, running: 3, now: .seconds(3)) == .drain(id: "b2"))
        var draining = quiet
        draining[1].state = .draining
        #expect(a.observe(draining, running: 3, now: .seconds(30)) == .hold)
        let two = [quiet[0], quiet[2]]
        #expect(a.observe(two, running: 2, now: .seconds(31)) == .hold)
        #expect(a.observe(two, running: 2, now: .seconds(34)) == .drain(id: "b1"))
        // Never below the minimum.
        var b = Autoscaler(policy: Self.policy())
        #expect(b.observe([Self.broker("b1", clients: 0)], running: 1, now: .zero) == .hold)
        #expect(b.observe([Self.broker("b1", clients: 0)], running: 1, now: .seconds(100)) == .hold)
    }

    @Test func doesNotScaleInWhenTheRestWouldBeOverloaded() {
        var p = Self.policy()
        p.scaleInBelow = 0.45
        var a = Autoscaler(policy: p)
        // 0.43 on two brokers would be 0.86 on one: above the scale-out threshold.
        let load = [Self.broker("b1", clients: 43), Self.broker("b2", clients: 43)]
        for t in 0..<30 { #expect(a.observe(load, running: 2, now: .seconds(Int64(t))) == .hold) }
    }

    @Test func deliveriesCountAgainstTheirCapacityToo() {
        var p = Self.policy()
        p.deliveriesPerBroker = 1000
        var a = Autoscaler(policy: p)
        let load = [Self.broker("b1", clients: 5, deliveries: 950)]
        #expect(a.utilization(load) == 0.95)
        #expect(a.observe(load, running: 1, now: .zero) == .hold)
        #expect(a.observe(load, running: 1, now: .seconds(3)) == .addBroker(count: 2))
    }

    @Test func belowTheMinimumItAddsAtOnce() {
        var p = Self.policy()
        p.minimum = 2
        var a = Autoscaler(policy: p)
        #expect(a.observe([Self.broker("b1", clients: 0)], running: 1, now: .zero) == .addBroker(count: 2))
        #expect(throws: TocsinError.self) {
            var bad = Self.policy()
            bad.scaleInBelow = 0.9
            _ = try bad.validated()
        }
    }
}
