import Testing
import TocsinCore

@Suite struct URLsAndBackoffTests {
    @Test func joinPutsExactlyOneSlashBetween() {
        #expect(BaseURL.join("http://h:1", "v1/cluster") == "http://h:1/v1/cluster")
        #expect(BaseURL.join("http://h:1///", "/v1/cluster") == "http://h:1/v1/cluster")
        #expect(BaseURL.trimmed("http://h:1//") == "http://h:1")
    }

    @Test func webSocketURLFollowsTheScheme() {
        #expect(BaseURL.webSocketURL(forHTTP: "http://h:1/") == "ws://h:1/v1/ws")
        #expect(BaseURL.webSocketURL(forHTTP: "https://h") == "wss://h/v1/ws")
    }

    @Test func wildcardHosts() {
        #expect(ListenAddress.isWildcard("0.0.0.0") && ListenAddress.isWildcard("::") && ListenAddress.isWildcard("[::]"))
        #expect(!ListenAddress.isWildcard("127.0.0.1") && !ListenAddress.isWildcard("localhost"))
    }

    @Test func backoffDoublesUpToTheMaximumAndNeverOverflows() {
        let b = Backoff(initial: .milliseconds(100), maximum: .seconds(10))
        #expect(b.ceiling(attempt: 0) == .milliseconds(100))
        #expect(b.ceiling(attempt: 3) == .milliseconds(800))
        #expect(b.ceiling(attempt: 1_000_000) == .seconds(10))
        #expect(b.ceiling(attempt: -5) == .milliseconds(100))
        #expect(b.delay(attempt: 3, random: 0.5) == .milliseconds(400))
        #expect(b.delay(attempt: 3, random: 7) == .milliseconds(800))
        for attempt in 0..<40 { #expect(b.delay(attempt: attempt) <= .seconds(10)) }
    }
}
