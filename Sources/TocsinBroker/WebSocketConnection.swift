import Foundation
import Logging
import NIOCore
import NIOWebSocket
import Synchronization
import TocsinCore

/// One WebSocket connection at /v1/ws, after the upgrade: a channel handler, last in the
/// pipeline, with no task of its own. A connected, idle client costs its channel, this handler,
/// its session and its place in its event loop's keepalive sweep: no task stack and no timer of
/// its own (docs/performance.md, "Memory per connection").
///
/// Frames go through `WebSocketConnectionMachine` (fragments, UTF-8, pings, the closing
/// handshake); whole messages go to `WebSocketRequests`, which starts a task to handle them while
/// there are any. Notifications go out through the session's drain (`FrameWriter`), not through
/// here. Everything here runs on the channel's event loop.
final class WebSocketConnection: ChannelDuplexHandler, RemovableChannelHandler, KeepaliveTarget {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let endpoint: WebSocketEndpoint
    private let grant: Grant?
    private let logger: Logger
    private var machine: WebSocketConnectionMachine
    private var requests: WebSocketRequests?
    /// Its event loop's keepalive sweep and its slot there, while the session is open.
    private var keepalive: (sweep: KeepaliveSweep<WebSocketConnection>, slot: Int)?
    /// Its context, for the keepalive (set while it is in the sweep).
    private var context: ChannelHandlerContext?
    private var started = false

    init(endpoint: WebSocketEndpoint, grant: Grant?, logger: Logger) {
        self.endpoint = endpoint
        self.grant = grant
        self.logger = logger
        self.machine = WebSocketConnectionMachine(maxMessageBytes: endpoint.broker.configuration.maxMessageBytes * 4)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        requests = WebSocketRequests.open(endpoint: endpoint, channel: context.channel, grant: grant, logger: logger)
        if requests != nil {
            self.context = context
            let sweep = endpoint.broker.keepalives.sweep(on: context.eventLoop)
            keepalive = (sweep, sweep.add(self))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let keepalive { keepalive.sweep.remove(self, slot: keepalive.slot) }
        keepalive = nil
        self.context = nil
        requests?.ended()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        apply(machine.received(unwrapInboundIn(data)), context: context)
    }

    private func apply(_ action: WebSocketConnectionMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .deliver(let message):
            requests?.arrived(message)
        case .pong(let payload):
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)), promise: nil)
        case .close(let code, let reason):
            WebSocketEndpoint.close(context.channel, code: code, reason: reason, grace: endpoint.broker.configuration.closeGrace)
        }
    }

    /// Reads wait while the inbox is full (`WebSocketInbox`): back-pressure on the client.
    func read(context: ChannelHandlerContext) {
        if requests?.mayRead() ?? true { context.read() }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if unwrapOutboundIn(data).opcode == .connectionClose { machine.closeSent() }
        context.write(data, promise: promise)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The socket takes bytes again: replays waiting for room go on.
        if context.channel.isWritable { requests?.session.transportBuffered(0) }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection failed", metadata: ["error": "\(error)"])
        if let error = error as? NIOWebSocketError {
            apply(machine.decoderFailed(error), context: context)
        } else {
            context.close(promise: nil)
        }
    }

    /// Keepalive, once per period (`KeepaliveSweep`): a ping, and a peer that sent nothing for a
    /// whole period after one is closed (1001). Any frame counts as a sign of life, not only a pong.
    func keepaliveDue() {
        guard let context else { return }
        switch machine.pingDue() {
        case .none:
            return
        case .ping:
            var payload = context.channel.allocator.buffer(capacity: 8)
            payload.writeInteger(UInt64.random(in: .min ... .max))
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: payload)), promise: nil)
        case .close(let code, let reason):
            logger.debug("closing a WebSocket that answered no ping")
            WebSocketEndpoint.close(context.channel, code: code, reason: reason, grace: endpoint.broker.configuration.closeGrace)
        }
    }
}

/// The requests of one connection, handled in order on a task that runs only while there are
/// any (`WebSocketInbox`), and what lives as long as the connection: its session, its publish
/// window, its timers (the first message's deadline, the token's expiry) and its replays.
final class WebSocketRequests: Sendable {
    let session: Session
    private let endpoint: WebSocketEndpoint
    private let channel: any Channel
    private let publishes: PublishWindow
    /// The token's clock, with authentication on.
    private let expiry: TokenExpiry?
    /// The first message's deadline, until it is met (then released: an idle connection keeps no timer it does not need).
    private let silence: Mutex<Scheduled<Void>?>
    private let authenticating: Bool
    private let inbox = Mutex(WebSocketInbox<Request>())
    private let replays = Mutex(Replays())
    /// The first message (with authentication on, a valid token) came: the silence timer is off.
    private let spoke = Atomic<Bool>(false)

    /// Opens the session of a connection just upgraded (on its event loop), or closes the
    /// connection (returning nil) when its client is over its connection limits.
    static func open(endpoint: WebSocketEndpoint, channel: any Channel, grant: Grant?, logger: Logger) -> WebSocketRequests? {
        let broker = endpoint.broker
        // Connections count against the client of the upgrade's token (a hello's token counts at the hello).
        do {
            try broker.limits.take(.connection, key: grant?.client)
            if let grant { try broker.limits.open(client: grant.client) }
        } catch {
            WebSocketEndpoint.close(
                channel, code: .policyViolation, reason: "rate limited", after: .error(id: nil, error), grace: broker.configuration.closeGrace)
            return nil
        }
        return WebSocketRequests(endpoint: endpoint, channel: channel, grant: grant, logger: logger)
    }

    private init(endpoint: WebSocketEndpoint, channel: any Channel, grant: Grant?, logger: Logger) {
        let broker = endpoint.broker
        let configuration = broker.configuration
        // 15 characters: Swift keeps a string that short inline, with no allocation of its own.
        let random = String(UInt64.random(in: 0..<(1 << 48)), radix: 16)
        let sessionID = "ws-" + String(repeating: "0", count: 12 - random.utf8.count) + random
        let writer = NIOLoopBoundBox.makeBoxSendingValue(FrameWriter(channel: channel), eventLoop: channel.eventLoop)
        let session = Session(
            id: sessionID, maxOutboundBytes: configuration.maxOutboundBytes, logger: logger, eventLoop: channel.eventLoop,
            peer: channel.remoteAddress?.ipAddress ?? "unknown"
        ) { session in
            WebSocketEndpoint.drain(session, to: channel, writer: writer.value, broker: broker)
        }
        self.session = session
        self.endpoint = endpoint
        self.channel = channel
        let authenticating = broker.access.authentication.verifier != nil
        self.authenticating = authenticating
        // The first message must come within the timeout (`hello`, or a publisher's first request),
        // and with authentication on, a valid token too. Counted, logged at debug only: a flood of
        // silent connections must not flood the log.
        let silence = channel.eventLoop.scheduleTask(in: .nanoseconds(configuration.firstMessageTimeout.nanoseconds)) {
            broker.metrics.timeouts.increment()
            session.logger.debug("closing a WebSocket that sent nothing or no valid token", metadata: ["timeoutMs": "\(configuration.firstMessageTimeout.milliseconds)"])
            session.close(authenticating && session.grant == nil ? .unauthenticated : .silent)
        }
        self.silence = Mutex(silence)
        expiry = authenticating
            ? TokenExpiry(session: session, eventLoop: channel.eventLoop, nowMillis: broker.nowMillis, warning: configuration.tokenExpiryWarning)
            : nil
        if let grant {
            session.grant = grant
            session.admittedClient = grant.client
            expiry?.schedule(for: grant)
        }
        publishes = PublishWindow(
            capacity: max(configuration.maxPipelinedPublishes, 1), byteCapacity: max(configuration.maxPipelinedPublishBytes, 0),
            budget: broker.publishBudget)
        broker.metrics.sessionsOpened.increment()
        broker.sessions.opened(session)
        broker.openWebSockets.add(channel)
    }

    /// A message waiting in the inbox. Every connection's inbox keeps room for two, idle or
    /// not, so the large cases are boxed (`indirect`): the enum stays the size of a message.
    enum Request {
        /// As read.
        case message(WebSocketConnectionMachine.Message)
        /// A text message already decoded on the event loop (see `arrived`).
        indirect case decoded(Result<ClientMessage, WireError>, bytes: Int)
        /// A publish refused on the event loop: answered once the publishes before it are.
        indirect case refused(id: String?, TocsinError)
    }

    /// The largest message decoded on the event loop, to try it as a publish there.
    static let maxDecodedOnLoop = 64 << 10

    /// A whole message was read (on the event loop). A publish that reaches a connection with
    /// no earlier message still being handled, and has room in its window, is queued for commit
    /// right here: from the socket to the commit thread with no task in between. Anything else
    /// waits in the inbox for the connection's task, in order.
    func arrived(_ message: WebSocketConnectionMachine.Message) {
        var request = Request.message(message)
        if case .text(let text) = message, inbox.withLock({ $0.isIdle }) {
            let size = text.utf8.count
            if size <= min(Self.maxDecodedOnLoop, endpoint.broker.configuration.maxMessageBytes) {
                let decoded = ClientMessage.decode(text.utf8)
                switch endpoint.publishAtOnce(decoded, bytes: size, session: session, publishes: publishes) {
                case .queued:
                    if !authenticating || session.grant != nil { heard() }
                    return
                case .refused(let id, let error):
                    request = .refused(id: id, error)
                case .notNow:
                    request = .decoded(decoded, bytes: size)
                }
            }
        }
        if inbox.withLock({ $0.arrived(request) }) { work() }
    }

    /// The connection closed: the session ends once the message being handled is.
    func ended() {
        if inbox.withLock({ $0.ended() }) { work() }
    }

    func mayRead() -> Bool { inbox.withLock { $0.mayRead() } }

    private func work() {
        Task { await self.handleAll() }
    }

    private func handleAll() async {
        while let (item, resumeReading) = inbox.withLock({ $0.next() }) {
            if resumeReading { channel.read() }
            switch item {
            case .message(let request): await handle(request)
            case .ended: await end()
            }
        }
    }

    private func handle(_ request: Request) async {
        let configuration = endpoint.broker.configuration
        if !authenticating || session.grant != nil { heard() }
        let decoded: Result<ClientMessage, WireError>, size: Int
        switch request {
        case .message(.binary):
            await publishes.drained()
            endpoint.reject(id: nil, TocsinError(.badRequest, "binary frames are not supported; send JSON text frames"), session: session)
            return
        case .message(.text(let text)):
            size = text.utf8.count
            guard size <= configuration.maxMessageBytes else {
                await publishes.drained()
                endpoint.reject(
                    id: nil, TocsinError(.tooLarge, "a message may be at most \(configuration.maxMessageBytes) bytes, got \(size)"), session: session)
                return
            }
            decoded = ClientMessage.decode(text.utf8)
        case .decoded(let message, let bytes):
            (decoded, size) = (message, bytes)
        case .refused(let id, let error):
            await publishes.drained()
            endpoint.reject(id: id, error, session: session)
            return
        }
        let pending = await endpoint.handle(decoded, bytes: size, session: session, publishes: publishes, expiry: expiry)
        for replay in pending { start(replay) }
        if session.grant != nil { heard() }
    }

    private func heard() {
        if !spoke.load(ordering: .relaxed), !spoke.exchange(true, ordering: .relaxed) { stopSilenceTimer() }
    }

    private func stopSilenceTimer() {
        silence.withLock { timer in
            defer { timer = nil }
            return timer
        }?.cancel()
    }

    private func end() async {
        let broker = endpoint.broker
        stopSilenceTimer()
        await broker.subscriptions.closed(session: session)
        broker.metrics.sessionsClosed.increment()
        let running = replays.withLock { $0.end() }
        for task in running { task.cancel() }
        expiry?.cancel()
        if let client = session.admittedClient { broker.limits.close(client: client) }
        broker.openWebSockets.remove(channel)
    }

    /// Runs a replay beside the requests; it is cancelled when the connection ends.
    private func start(_ replay: PendingReplay) {
        guard let id = replays.withLock({ $0.reserve() }) else { return }
        let task = Task {
            await replay.run()
            self.replays.withLock { $0.finished(id) }
        }
        if !replays.withLock({ $0.started(id, task) }) { task.cancel() }
    }

    /// The replays running, by a number of their own.
    struct Replays {
        private var next = 0
        private var running: [Int: Task<Void, Never>?] = [:]
        private var ended = false

        /// A number for a replay about to start; nil once the connection ended.
        mutating func reserve() -> Int? {
            guard !ended else { return nil }
            next += 1
            running[next] = .some(nil)
            return next
        }

        /// Its task started. False when it must be cancelled (the connection ended meanwhile).
        mutating func started(_ id: Int, _ task: Task<Void, Never>) -> Bool {
            guard !ended else { return false }
            if running[id] != nil { running[id] = task }  // else it has finished already
            return true
        }

        mutating func finished(_ id: Int) { running[id] = nil }

        /// The connection ended: the tasks to cancel.
        mutating func end() -> [Task<Void, Never>] {
            ended = true
            defer { running = [:] }
            return running.values.compactMap { $0 }
        }
    }
}

/// Every open WebSocket connection of a broker, so shutdown can close them and wait for their
/// sessions to end: they hold no task the server would wait for. A connection counts from its
/// session's start until its cleanup (`WebSocketRequests.end`) has finished, so nothing it
/// does (detaching subscriptions, saving positions) runs after the broker's store closes.
final class OpenWebSockets: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// `closeAll` callers waiting for none to be left, by a number of their own.
        var whenNone: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.channels.count } }

    func add(_ channel: any Channel) {
        state.withLock { $0.channels[ObjectIdentifier(channel)] = channel }
    }

    /// The connection's session has ended.
    func remove(_ channel: any Channel) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.channels.removeValue(forKey: ObjectIdentifier(channel))
            guard state.channels.isEmpty else { return [] }
            defer { state.whenNone = [:] }
            return Array(state.whenNone.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Sends every connection a close frame (1001) and returns once all their sessions ended.
    /// Each closes once its close frame is written or after `grace`. Cancelled (the shutdown
    /// grace is over), this closes them all at once and returns without waiting any longer: a
    /// session stuck in a request must not hold the shutdown forever.
    func closeAll(grace: Duration) async {
        let (open, id) = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return (Array(state.channels.values), state.nextWaiter)
        }
        for channel in open {
            channel.eventLoop.execute {
                WebSocketEndpoint.close(channel, code: .goingAway, reason: "the broker is shutting down", grace: grace)
            }
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let done = state.withLock { state -> Bool in
                    if state.channels.isEmpty || Task.isCancelled { return true }
                    state.whenNone[id] = waiter
                    return false
                }
                if done { waiter.resume() }
            }
        } onCancel: {
            for channel in open { channel.close(promise: nil) }
            state.withLock { $0.whenNone.removeValue(forKey: id) }?.resume()
        }
    }
}
