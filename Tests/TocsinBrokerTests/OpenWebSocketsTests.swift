import NIOCore
import NIOEmbedded
import Testing
@testable import TocsinBroker

/// Shutdown closes every WebSocket and waits for each session's cleanup, but not forever.
@Suite(.timeLimit(.minutes(1)))
struct OpenWebSocketsTests {
    @Test func closeAllReturnsOnceEverySessionEnded() async throws {
        let open = OpenWebSockets()
        let channels = [NIOAsyncTestingChannel(), NIOAsyncTestingChannel()]
        for channel in channels { open.add(channel) }
        let closing = Task { await open.closeAll(grace: .seconds(60)) }
        open.remove(channels[0])
        #expect(open.count == 1)
        open.remove(channels[1])
        await closing.value
        #expect(open.count == 0)
        await open.closeAll(grace: .seconds(60))  // none open: at once
    }

    /// A session stuck in a request never ends; once the shutdown grace is over (the task is
    /// cancelled) the channels are closed and shutdown goes on without it.
    @Test func cancelledItStopsWaitingForASessionThatNeverEnds() async throws {
        let open = OpenWebSockets()
        let channel = NIOAsyncTestingChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        open.add(channel)
        let closing = Task { await open.closeAll(grace: .seconds(60)) }
        closing.cancel()
        await closing.value
        try await channel.closeFuture.get()
        #expect(open.count == 1, "its session has still not ended")
    }
}
