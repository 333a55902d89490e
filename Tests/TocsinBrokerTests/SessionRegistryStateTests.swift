import Testing
@testable import TocsinBroker

/// The session registry's decisions — who can migrate, who counts as load, when a migration is
/// stale — driven directly with ids and literal times.
struct SessionRegistryStateTests {
    typealias State = SessionRegistry.State

    @Test func onlyIdentifiedSessionsNotAlreadyMovingAreChosen() {
        var s = State()
        s.open("a")
        s.open("b")
        s.open("c")
        s.identify("a")
        s.identify("b")
        #expect(s.identifiedCount == 2)
        let first = s.startMigration(count: 5, now: .seconds(1))
        #expect(Set(first) == ["a", "b"], "c never said hello")
        #expect(s.startMigration(count: 5, now: .seconds(2)).isEmpty, "one move at a time")
        #expect(s.staying == ["c"])
        #expect(s.migratingCount == 2)
    }

    @Test func atMostCountAreChosen() {
        var s = State()
        for i in 0..<10 {
            s.open("s\(i)")
            s.identify("s\(i)")
        }
        #expect(s.startMigration(count: 3, now: .zero).count == 3)
        #expect(s.startMigration(count: 0, now: .zero).isEmpty)
        #expect(s.startMigration(count: -1, now: .zero).isEmpty)
        #expect(s.migratingCount == 3)
        #expect(s.staying.count == 7)
    }

    @Test func aStaleMigrationIsEvictedOnceAfterTheTimeout() {
        var s = State()
        s.open("a")
        s.identify("a")
        _ = s.startMigration(count: 1, now: .seconds(10))
        #expect(s.evictStaleMigrations(olderThan: .seconds(30), now: .seconds(40)).isEmpty, "exactly the timeout is not stale yet")
        #expect(s.evictStaleMigrations(olderThan: .seconds(30), now: .seconds(41)) == ["a"])
        #expect(s.evictStaleMigrations(olderThan: .seconds(30), now: .seconds(99)).isEmpty, "reported once")
        s.close("a")
        #expect(s.count == 0 && s.migratingCount == 0)
    }

    @Test func aSessionThatLeavesIsForgottenAndCannotBeChosen() {
        var s = State()
        s.open("a")
        s.identify("a")
        s.close("a")
        s.identify("a")  // a late hello for a closed session changes nothing
        #expect(s.count == 0)
        #expect(s.startMigration(count: 1, now: .zero).isEmpty)
    }

    @Test func aMigrationDuringADrainCountsOnlyTheStaying() {
        // A drain moves everyone; while orders are out, load reports only the sessions staying,
        // so the controller does not order the same move twice.
        var s = State()
        for id in ["a", "b", "c", "d"] {
            s.open(id)
            s.identify(id)
        }
        let told = s.startMigration(count: 2, now: .seconds(1))
        #expect(told.count == 2)
        #expect(Set(s.staying) == Set(["a", "b", "c", "d"]).subtracting(told))
        let rest = s.startMigration(count: 10, now: .seconds(2))
        #expect(Set(rest + told) == ["a", "b", "c", "d"])
        #expect(s.staying.isEmpty)
    }
}
