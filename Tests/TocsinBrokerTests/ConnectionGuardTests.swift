import Testing
@testable import TocsinBroker
import TocsinCore
import TocsinTesting
@testable import TocsinHTTP

/// The HTTP connection guard's decisions and the WebSocket mask check, driven directly.
struct ConnectionGuardTests {
    typealias Machine = HTTPConnectionGuard.StateMachine

    static let limits: HTTPEdgeLimits = {
        var limits = HTTPEdgeLimits()
        limits.headTimeout = .seconds(2)
        limits.bodyTimeout = .seconds(5)
        limits.maxURIBytes = 100
        return limits
    }()

    static func head(uri: Int = 10, major: Int = 1, upgrade: Bool = false, version: String? = nil) -> Machine.Head {
        .init(uriBytes: uri, majorVersion: major, webSocketUpgrade: upgrade, webSocketVersion: version)
    }

    @Test func aRequestMovesTheDeadlineFromHeadToBodyToNone() {
        var m = Machine(limits: Self.limits)
        let start = m.started(overCapacity: false)
        #expect(start == .forward(.start(.seconds(2))))
        let step1 = m.receivedHead(Self.head())
        #expect(step1 == .forward(.start(.seconds(5))))
        let step2 = m.receivedBodyPart()
        #expect(step2 == .forward(.keep))
        let step3 = m.receivedEnd()
        #expect(step3 == .forward(.cancel))
        #expect(m.phase == .responding)
        let step4 = m.deadlinePassed()
        #expect(step4 == .drop, "no deadline while the application answers")
        let step5 = m.sentResponseEnd()
        #expect(step5 == .start(.seconds(2)), "keep-alive: the next head is due")
        #expect(m.phase == .awaitingHead)
    }

    @Test func deadlinesAnswer408AndClose() {
        var silent = Machine(limits: Self.limits)
        guard case .reject(let r) = silent.deadlinePassed() else { Issue.record("expected a rejection"); return }
        #expect(r.error.code == .timeout)
        #expect(silent.phase == .closed)
        let step6 = silent.receivedBodyPart()
        #expect(step6 == .drop)

        var slowBody = Machine(limits: Self.limits)
        _ = slowBody.receivedHead(Self.head())
        guard case .reject(let b) = slowBody.deadlinePassed() else { Issue.record("expected a rejection"); return }
        #expect(b.error.code == .timeout)
        #expect(b.error.message.contains("body"))
    }

    @Test func anAnswerBeforeTheBodyEndsLeavesTheHeadDeadlineBoundingTheRest() {
        var m = Machine(limits: Self.limits)
        _ = m.receivedHead(Self.head())
        let step7 = m.sentResponseEnd()
        #expect(step7 == .start(.seconds(2)))
        let step8 = m.receivedBodyPart()
        #expect(step8 == .forward(.keep))
        let step9 = m.receivedEnd()
        #expect(step9 == .forward(.keep))
        guard case .reject = m.deadlinePassed() else { Issue.record("a body that never ends is still bounded"); return }
    }

    @Test func badHeadsGetTheirStatus() {
        func rejection(_ head: Machine.Head) -> TocsinError? {
            var m = Machine(limits: Self.limits)
            guard case .reject(let r) = m.receivedHead(head) else { return nil }
            return r.error
        }
        #expect(rejection(Self.head(uri: 101))?.code == .uriTooLong)
        #expect(rejection(Self.head(uri: 100)) == nil)
        #expect(rejection(Self.head(major: 2))?.code == .httpVersionNotSupported)
        #expect(rejection(Self.head(upgrade: true, version: "8"))?.code == .upgradeRequired)
        var m = Machine(limits: Self.limits)
        guard case .reject(let r) = m.receivedHead(Self.head(upgrade: true, version: "8")) else { return }
        #expect(r.error.code.httpStatus.code == 426)
        #expect(r.headers["Sec-WebSocket-Version"] == "13")
    }

    @Test func anUpgradeHandsTheConnectionOver() {
        var m = Machine(limits: Self.limits)
        let step10 = m.receivedHead(Self.head(upgrade: true, version: "13"))
        #expect(step10 == .forward(.cancel))
        #expect(m.phase == .passthrough)
        let step11 = m.deadlinePassed()
        #expect(step11 == .drop)
        let step12 = m.parseFailed(.malformed)
        #expect(step12 == .drop)
        let step13 = m.sentResponseEnd()
        #expect(step13 == .keep)
    }

    @Test func aConnectionOverTheLimitIsAnswered503() {
        var m = Machine(limits: Self.limits)
        guard case .reject(let r) = m.started(overCapacity: true) else { Issue.record("expected a rejection"); return }
        #expect(r.error.code == .unavailable)
        #expect(r.headers["Retry-After"] == "1")
        #expect(m.phase == .closed)
    }

    @Test func parseErrorsMapToStatuses() {
        for (error, status) in [(Machine.ParseError.headTooLarge, 431), (.unknownMethod, 501), (.badVersion, 505), (.malformed, 400)] {
            var m = Machine(limits: Self.limits)
            guard case .reject(let r) = m.parseFailed(error) else { Issue.record("\(error) not rejected"); continue }
            #expect(Int(r.error.code.httpStatus.code) == status)
        }
    }
}
