import Testing
import TocsinCore

struct LogThrottleTests {
    @Test func theFirstOccurrenceIsLoggedThenAtMostOncePerIntervalWithTheCount() {
        var throttle = LogThrottle(interval: .seconds(60))
        let t0 = ContinuousClock.now
        #expect(throttle.occurred(at: t0) == 1)
        for i in 1...10 { #expect(throttle.occurred(at: t0 + .seconds(i)) == nil) }
        // The line a minute later stands for itself and the 10 kept quiet.
        #expect(throttle.occurred(at: t0 + .seconds(60)) == 11)
        #expect(throttle.occurred(at: t0 + .seconds(61)) == nil)
        // After a long quiet spell, the next occurrence is logged at once.
        #expect(throttle.occurred(at: t0 + .seconds(600)) == 2)
    }
}
