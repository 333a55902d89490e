import Testing
import TocsinCore

/// Live configuration and commands as pure values: what is accepted, what each component is
/// sent, and what a restart, a lost result or a deadline does.
@Suite struct ControlPlaneTests {
    static let brokers: [(id: String, role: ComponentRole)] = [("b1", .broker), ("b2", .broker), ("b3", .broker), ("c1", .controller)]

    // MARK: Settings

    @Test func settingsAreCheckedAtTheEdge() throws {
        #expect(try LiveSettings.setting("log.level", for: .broker).check(.string("debug")) == .string("debug"))
        #expect(try LiveSettings.setting("limits.maxConnectionsPerClient", for: .broker).check(.double(12)) == .int(12))
        #expect(try LiveSettings.setting("limits.publishEventsPerSecond", for: .broker).check(.int(500)) == .double(500))
        func refused(_ key: String, _ value: JSONValue, role: ComponentRole = .broker) -> String? {
            do {
                _ = try LiveSettings.setting(key, for: role).check(value)
                return nil
            } catch {
                #expect(error.code == .invalidSetting)
                return error.message
            }
        }
        #expect(refused("log.level", .string("loud"))?.contains("trace, debug") == true)
        #expect(refused("log.level", .int(3)) != nil)
        #expect(refused("limits.maxConnectionsPerClient", .int(-1))?.contains("0...1000000") == true)
        #expect(refused("limits.maxConnectionsPerClient", .double(1.5)) != nil)
        #expect(refused("limits.publishEventsPerSecond", .double(.infinity)) != nil)
        #expect(refused("limits.publishEventsBurst", .int(0)) != nil)
        #expect(refused("rebalance.enabled", .string("yes"), role: .controller) != nil)
        #expect(refused("fetchCache.entries", .int(5))?.contains("--fetch-cache-entries") == true)
        #expect(refused("fetchCache.entries", .int(5))?.contains("restart") == true)
        #expect(refused("nonsense", .int(5))?.contains("log.level") == true)
        #expect(refused("rebalance.enabled", .bool(true), role: .broker)?.contains("controller setting") == true)
    }

    /// A settings file's keys: nested objects and dotted names mean the same key; what is not a
    /// live setting of the role is named with the reason, the rest pass.
    @Test func aSettingsFilesKeysAreFlattenedAndTheOnesThatAreNotLiveNamed() throws {
        let file = try JSONValue.parse(
            #"{"log": {"level": "debug"}, "limits.publishEventsBurst": 5, "limits": {"subscribesBurst": 2}, "port": 9, "rebalance": {"enabled": true}, "typo": {"x": 1}}"#)
        let keys = LiveSettings.flattenedKeys(file)
        #expect(Set(keys) == ["log.level", "limits.publishEventsBurst", "limits.subscribesBurst", "port", "rebalance.enabled", "typo.x"])
        let problems = LiveSettings.problems(withKeys: keys, for: .broker)
        #expect(problems.count == 3, "\(problems)")
        #expect(problems.contains { $0.contains("port is not live") && $0.contains("--port") })
        #expect(problems.contains { $0.contains("rebalance.enabled") && $0.contains("controller") })
        #expect(problems.contains { $0.contains("unknown setting") && $0.contains("typo.x") })
        #expect(LiveSettings.problems(withKeys: keys, for: .controller).count == 4, "the limits are the broker's")
        #expect(LiveSettings.flattenedKeys(.object([:])).isEmpty)
    }

    @Test func commandLineValuesMeanWhatTheyLookLike() {
        #expect(LiveSetting.parseArgument("500") == .int(500))
        #expect(LiveSetting.parseArgument("0.5") == .double(0.5))
        #expect(LiveSetting.parseArgument("true") == .bool(true))
        #expect(LiveSetting.parseArgument("debug") == .string("debug"))
        #expect(LiveSetting.parseArgument("\"x\"") == .string("\"x\""))
    }

    // MARK: Configuration

    @Test func everyChangeIsAVersionWithItsAuthor() throws {
        var book = ConfigBook()
        let firstChange = try book.set("log.level", to: .string("debug"), in: .role(.broker), role: .broker, by: "ops", atMillis: 1000)
        let first = try #require(firstChange)
        #expect(first.version == 1 && first.old == nil && first.new == .string("debug") && first.by == "ops" && first.atMillis == 1000)
        // The same value again changes nothing.
        #expect(try book.set("log.level", to: .string("debug"), in: .role(.broker), role: .broker, by: "ops", atMillis: 2000) == nil)
        #expect(book.version == 1)
        _ = try book.set("log.level", to: .string("error"), in: .component("b2"), role: .broker, by: "alice", atMillis: 3000)
        _ = try book.set("limits.publishEventsPerSecond", to: .int(50), in: .role(.broker), role: .broker, by: "ops", atMillis: 4000)
        #expect(book.version == 3)
        #expect(book.effective(role: .broker, id: "b1") == ["log.level": .string("debug"), "limits.publishEventsPerSecond": .double(50)])
        #expect(book.effective(role: .broker, id: "b2") == ["log.level": .string("error"), "limits.publishEventsPerSecond": .double(50)])
        #expect(book.effective(role: .controller, id: "c1") == [:])
        let unsetChange = book.unset("log.level", in: .component("b2"), by: "alice", atMillis: 5000)
        let unset = try #require(unsetChange)
        #expect(unset.version == 4 && unset.old == .string("error") && unset.new == nil)
        #expect(book.unset("log.level", in: .component("b2"), by: "alice", atMillis: 5000) == nil)
        #expect(book.effective(role: .broker, id: "b2")["log.level"] == .string("debug"))
        #expect(book.history.map(\.version) == [1, 2, 3, 4])

        let copy = try ConfigBook(json: try JSONValue.parse(book.json.serialized))
        #expect(copy == book)
    }

    @Test func aRefusedValueChangesNothing() {
        var book = ConfigBook()
        #expect(throws: TocsinError.self) {
            try book.set("limits.maxConnectionsPerClient", to: .int(-5), in: .role(.broker), role: .broker, by: "ops", atMillis: 1)
        }
        #expect(book.version == 0 && book.values.isEmpty && book.history.isEmpty)
    }

    @Test func historyIsBounded() throws {
        var book = ConfigBook()
        for i in 0..<(ConfigBook.historyLimit + 25) {
            _ = try book.set("limits.maxConnectionsPerClient", to: .int(Int64(i + 1)), in: .role(.broker), role: .broker, by: "ops", atMillis: Int64(i))
        }
        #expect(book.history.count == ConfigBook.historyLimit)
        #expect(book.history.last?.version == book.version)
        #expect(book.history.first?.version == book.version - Int64(ConfigBook.historyLimit) + 1)
    }

    @Test func aStoredBookWithAKeyNoLongerLiveStillLoads() throws {
        let text = #"{"version": 7, "entries": [{"scope": {"role": "broker"}, "key": "gone.setting", "value": 1}, {"scope": {"role": "broker"}, "key": "log.level", "value": "info"}, {"scope": {"role": "broker"}, "key": "limits.maxConnectionsPerClient", "value": -3}]}"#
        let book = try ConfigBook(json: try JSONValue.parse(text))
        #expect(book.version == 7)
        #expect(book.effective(role: .broker, id: "b1") == ["log.level": .string("info")])
    }

    @Test func aComponentIsSentItsConfigurationUntilItRunsIt() throws {
        var plane = ControlPlane()
        _ = try plane.set("log.level", to: .string("debug"), in: .role(.broker), by: "ops", nowMillis: 0, live: Self.brokers)
        let first = plane.heartbeat(id: "b1", role: .broker, incarnation: "i1", configVersion: nil, results: [], nowMillis: 10)
        #expect(first.config == ConfigPush(version: 1, values: ["log.level": .string("debug")]))
        let second = plane.heartbeat(id: "b1", role: .broker, incarnation: "i1", configVersion: 1, results: [], nowMillis: 20)
        #expect(second.config == nil)
        #expect(plane.running["b1"] == 1)
        // A component scope needs a component the plane has heard of.
        #expect(throws: TocsinError.self) {
            try plane.set("log.level", to: .string("info"), in: .component("b9"), by: "ops", nowMillis: 30, live: Self.brokers)
        }
        // A controller setting on a broker is refused.
        #expect(throws: TocsinError.self) {
            try plane.set("rebalance.enabled", to: .bool(false), in: .component("b1"), by: "ops", nowMillis: 30, live: Self.brokers)
        }
    }

    // MARK: Commands

    static func submit(
        _ book: inout CommandBook, _ kind: CommandKind, _ target: CommandTarget, at now: Int64 = 0, timeout: Int64 = 10_000,
        known: [String: ComponentRole]? = nil
    ) throws(TocsinError) -> CommandRecord {
        let known = known ?? Dictionary(uniqueKeysWithValues: brokers.map { ($0.id, $0.role) })
        return try book.submit(kind: kind, args: .object([:]), target: target, timeoutMillis: timeout, by: "ops", nowMillis: now, live: brokers, known: known)
    }

    @Test func aBroadcastGoesToTheRoleLiveWhenGiven() throws {
        var book = CommandBook()
        let c = try Self.submit(&book, .snapshot, .role(.broker))
        #expect(c.targets.map(\.component) == ["b1", "b2", "b3"])
        #expect(c.targets.allSatisfy { $0.state == .pending })
        #expect(book.orders(for: "c1", nowMillis: 1).isEmpty)
        let orders = book.orders(for: "b1", nowMillis: 1)
        #expect(orders.map(\.id) == [c.id])
        #expect(book.command(c.id)?.targets[0].state == .delivered)
        // Sent again in every heartbeat until a result comes.
        #expect(book.orders(for: "b1", nowMillis: 2).map(\.id) == [c.id])
        book.report([CommandResult(id: c.id, outcome: .succeeded(.object(["ok": .bool(true)])))], from: "b1", nowMillis: 3)
        #expect(book.orders(for: "b1", nowMillis: 4).isEmpty)
        #expect(book.command(c.id)?.targets[0].state == .succeeded)
        // A result from a component that was not a target, or a second one, changes nothing.
        book.report([CommandResult(id: c.id, outcome: .failed(code: "x", message: "y"))], from: "b9", nowMillis: 5)
        book.report([CommandResult(id: c.id, outcome: .failed(code: "x", message: "y"))], from: "b1", nowMillis: 5)
        #expect(book.command(c.id)?.targets[0].state == .succeeded)
        book.report([CommandResult(id: c.id, outcome: .failed(code: "internal", message: "no")), ], from: "b2", nowMillis: 6)
        book.report([CommandResult(id: c.id, outcome: .succeeded(.object([:])))], from: "b3", nowMillis: 7)
        let done = try #require(book.command(c.id))
        #expect(done.isFinished)
        #expect(done.targets.map(\.state) == [.succeeded, .failed, .succeeded])
        #expect(done.targets[1].result == .object(["code": .string("internal"), "message": .string("no")]))
    }

    @Test func aCommandWaitsForAComponentThatIsRestarting() throws {
        var plane = ControlPlane()
        _ = plane.heartbeat(id: "b2", role: .broker, incarnation: "old", configVersion: 0, results: [], nowMillis: 0)
        // b2 is not live (it crashed) but was seen lately: a command to it is taken.
        let live = Self.brokers.filter { $0.id != "b2" }
        let c = try plane.submit(kind: .snapshot, args: .object([:]), target: .component("b2"), timeoutMillis: 60_000, by: "ops", nowMillis: 1_000, live: live)
        // The new incarnation's first heartbeat gets it.
        let back = plane.heartbeat(id: "b2", role: .broker, incarnation: "new", configVersion: nil, results: [], nowMillis: 5_000)
        #expect(back.orders.map(\.id) == [c.id])
        // Never seen: refused, saying so.
        #expect(throws: TocsinError.self) {
            try plane.submit(kind: .snapshot, args: .object([:]), target: .component("b7"), timeoutMillis: 60_000, by: "ops", nowMillis: 1_000, live: live)
        }
        // Seen too long ago: forgotten.
        _ = plane.tick(nowMillis: 5_000 + ControlPlane.rememberMillis)
        #expect(throws: TocsinError.self) {
            try plane.submit(
                kind: .snapshot, args: .object([:]), target: .component("b2"), timeoutMillis: 60_000, by: "ops", nowMillis: 5_000 + ControlPlane.rememberMillis,
                live: live)
        }
    }

    @Test func aHugeResultIsKeptAsItsSize() throws {
        var book = CommandBook()
        let c = try Self.submit(&book, .snapshot, .component("b1"))
        let huge = JSONValue.object(["blob": .string(String(repeating: "x", count: 100_000))])
        book.report([CommandResult(id: c.id, outcome: .succeeded(huge))], from: "b1", nowMillis: 1)
        #expect(book.command(c.id)?.targets[0].result?["truncated"] == .bool(true))
        #expect(book.command(c.id)?.targets[0].state == .succeeded)
    }

    @Test func aCommandWithoutResultsTimesOut() throws {
        var book = CommandBook()
        let c = try Self.submit(&book, .drain, .component("b1"), at: 0, timeout: 1_000)
        _ = book.orders(for: "b1", nowMillis: 10)
        #expect(book.expire(nowMillis: 999).isEmpty)
        let expired = book.expire(nowMillis: 1_000)
        #expect(expired.map(\.id) == [c.id])
        #expect(book.command(c.id)?.targets.map(\.state) == [.timedOut])
        #expect(book.orders(for: "b1", nowMillis: 1_001).isEmpty)
        // A late result does not change a timed-out target.
        book.report([CommandResult(id: c.id, outcome: .succeeded(.object([:])))], from: "b1", nowMillis: 1_002)
        #expect(book.command(c.id)?.targets.map(\.state) == [.timedOut])
    }

    @Test func badCommandsAreRefusedWithReasons() {
        var book = CommandBook()
        func code(_ body: (inout CommandBook) throws(TocsinError) -> Void) -> TocsinError.Code? {
            do {
                try body(&book)
                return nil
            } catch { return error.code }
        }
        #expect(code { b throws(TocsinError) in _ = try Self.submit(&b, .drain, .role(.controller)) } == .invalidCommand)
        #expect(code { b throws(TocsinError) in _ = try Self.submit(&b, .drain, .component("c1")) } == .invalidCommand)
        #expect(code { b throws(TocsinError) in _ = try Self.submit(&b, .snapshot, .component("zz")) } == .unknownComponent)
        #expect(code { b throws(TocsinError) in _ = try Self.submit(&b, .snapshot, .role(.broker), timeout: 10) } == .invalidCommand)
        #expect(code { b throws(TocsinError) in _ = try Self.submit(&b, .snapshot, .role(.broker), timeout: 90_000_000) } == .invalidCommand)
        #expect(code { b throws(TocsinError) in
            _ = try b.submit(kind: .logLevel, args: .object(["level": .string("loud")]), target: .role(.broker), timeoutMillis: 5_000, by: "o", nowMillis: 0,
                live: Self.brokers, known: [:])
        } == .invalidCommand)
        #expect(code { b throws(TocsinError) in
            _ = try b.submit(kind: .drain, args: .object(["x": .int(1)]), target: .role(.broker), timeoutMillis: 5_000, by: "o", nowMillis: 0,
                live: Self.brokers, known: [:])
        } == .invalidCommand)
        #expect(code { b throws(TocsinError) in
            _ = try b.submit(kind: .snapshot, args: .object([:]), target: .role(.broker), timeoutMillis: 5_000, by: "o", nowMillis: 0, live: [], known: [:])
        } == .unknownComponent)
        #expect(book.commands.isEmpty && book.nextNumber == 1)
    }

    @Test func finishedCommandsAreBoundedAndOpenOnesCapped() throws {
        var book = CommandBook()
        for i in 0..<(CommandBook.finishedLimit + 30) {
            let c = try Self.submit(&book, .snapshot, .component("b1"), at: Int64(i))
            book.report([CommandResult(id: c.id, outcome: .succeeded(.object([:])))], from: "b1", nowMillis: Int64(i))
        }
        #expect(book.commands.count == CommandBook.finishedLimit)
        #expect(book.commands.last?.id == "cmd-\(CommandBook.finishedLimit + 30)")
        for _ in 0..<CommandBook.openLimit { _ = try Self.submit(&book, .snapshot, .component("b2")) }
        #expect(throws: TocsinError.self) { try Self.submit(&book, .snapshot, .component("b2")) }
        let copy = try CommandBook(json: try JSONValue.parse(book.json.serialized))
        #expect(copy == book)
    }

    /// Random submits, heartbeats, results (some lost and repeated) and deadlines: a finished
    /// target never changes, every unfinished command's deadline is ahead, and each component
    /// is sent exactly its unfinished commands.
    @Test(arguments: 0..<20) func randomHistoriesKeepTheRules(seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        var book = CommandBook()
        var finals: [String: [String: CommandRecord.State]] = [:]
        var now: Int64 = 0
        let ids = ["b1", "b2", "b3"]
        for _ in 0..<300 {
            now += Int64(rng.next() % 400)
            switch rng.next() % 4 {
            case 0:
                let target: CommandTarget = rng.next() % 2 == 0 ? .role(.broker) : .component(ids[Int(rng.next() % 3)])
                _ = try Self.submit(&book, .snapshot, target, at: now, timeout: 1_000 + Int64(rng.next() % 5_000))
            case 1:
                let id = ids[Int(rng.next() % 3)]
                let orders = book.orders(for: id, nowMillis: now)
                let expected = book.commands.filter { c in !c.isFinished && c.targets.contains { $0.component == id && !$0.state.isFinal } }.map(\.id)
                #expect(orders.map(\.id) == expected)
                let answered = orders.filter { _ in rng.next() % 3 != 0 }
                book.report(answered.map { CommandResult(id: $0.id, outcome: .succeeded(.int(1))) }, from: id, nowMillis: now)
            case 2:
                _ = book.expire(nowMillis: now)
                #expect(book.commands.allSatisfy { $0.isFinished || $0.deadlineMillis > now })
            default:
                // A result for a command never sent to this component is ignored.
                if let c = book.commands.randomElement(using: &rng) {
                    book.report([CommandResult(id: c.id, outcome: .failed(code: "x", message: "y"))], from: "b9", nowMillis: now)
                }
            }
            for c in book.commands {
                for t in c.targets where t.state.isFinal {
                    if let earlier = finals[c.id]?[t.component] { #expect(earlier == t.state) }
                    finals[c.id, default: [:]][t.component] = t.state
                }
            }
        }
    }
}
