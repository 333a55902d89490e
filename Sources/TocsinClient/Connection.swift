public import Logging
import NIOCore
import NIOWebSocket
import Synchronization
import HTTPTypes
public import TocsinCore
import WSClient

/// One WebSocket connection to a broker, speaking docs/protocol.md: requests are matched to
/// replies by `id`; everything the server sends unasked (notifications, server-side
/// unsubscribes, resets) arrives on `events`.
///
/// A connection is scoped: `Connection.run(url:logger:_:)` opens it, runs the body and closes it.
/// It does not reconnect; `Subscriber` does that on top of it.
///
/// ```swift
/// try await Connection.run(url: "ws://127.0.0.1:7400/v1/ws", logger: logger) { connection in
///     _ = try await connection.hello(client: "alice")
///     let info = try await connection.subscribe(channel: "EmergenciesOfKind", params: ["kind": "fire"])
///     for await message in connection.events {
///         if case .notify(_, let seq, _) = message { try await connection.ack(subscription: info.subscription, seq: seq) }
///     }
/// }
/// ```
public final class Connection: Sendable {
    private struct State {
        var nextID = 0
        /// Requests sent and not yet answered; a reply that arrives before its requester waits is parked in `early`.
        var registered: Set<String> = []
        var waiting: [String: CheckedContinuation<ServerMessage, any Error>] = [:]
        var early: [String: Result<ServerMessage, any Error>] = [:]
        var closed = false
        /// Set by `handleEvents(with:)`: unsolicited frames go to it instead of `events`.
        var handler: (@Sendable (ServerMessage) -> Void)?
        /// Unsolicited frames received before a handler is installed (when `handleEvents` will be).
        var pending: [ServerMessage] = []
        var buffering = false
    }

    private let state = Mutex(State())
    private let outbound: WebSocketOutboundWriter
    /// Unsolicited server frames, in arrival order. Finishes when the connection closes.
    public let events: AsyncStream<ServerMessage>
    private let eventsContinuation: AsyncStream<ServerMessage>.Continuation

    init(outbound: WebSocketOutboundWriter) {
        self.outbound = outbound
        (events, eventsContinuation) = AsyncStream.makeStream(of: ServerMessage.self)
    }

    /// Connects, runs `body` with the connection, and closes it when `body` returns or throws.
    /// If the server goes away first, pending requests fail with `ConnectionClosed` and
    /// `events` finishes.
    ///
    /// - Parameters:
    ///   - url: The broker's WebSocket URL, `ws://host:port/v1/ws` (or `wss://`).
    ///   - logger: The WebSocket client's logger.
    ///   - maxMessageBytes: The largest frame accepted from the broker (16 MiB by default).
    ///   - headers: Extra headers of the upgrade request (`Authorization: Bearer …` carries a
    ///     token for the whole connection, so even a publisher that never says hello has one).
    ///   - trust: The CAs a `wss://` broker's certificate is verified against.
    ///   - body: What to do with the open connection; its result is returned.
    /// - Returns: What `body` returned.
    /// - Throws: A `TransportFailure` when the connection cannot be made (refused, unknown
    ///   host, not a WebSocket endpoint…), whatever `body` throws, or `ConnectionClosed` when
    ///   the connection closed before `body` finished.
    public static func run<T: Sendable>(
        url: String, logger: Logger, maxMessageBytes: Int = 16 << 20, pingInterval: Duration = .seconds(30), trust: TLSTrust = .system,
        headers: [(String, String)] = [],
        _ body: @escaping @Sendable (Connection) async throws -> T
    ) async throws -> T {
        let result = LockedBox<Result<T, any Error>?>(nil)
        var configuration = WebSocketClientConfiguration()
        for (name, value) in headers {
            if let field = HTTPField.Name(name) { configuration.additionalHeaders.append(HTTPField(name: field, value: value)) }
        }
        configuration.maxFrameSize = maxMessageBytes
        // A broker host that vanishes without closing the connection is noticed within two
        // ping periods (a ping unanswered by the next one closes the connection).
        configuration.autoPing = .enabled(timePeriod: min(max(pingInterval, .milliseconds(100)), .seconds(3600)))
        // Errors thrown here are the connection's own (`body`'s are kept in `result`): made into sentences.
        do {
            try await connect(
                url: url, configuration: configuration, trust: trust, logger: logger, maxMessageBytes: maxMessageBytes, result: result, body)
        } catch {
            throw TransportFailure.from(connecting: error, url: url) ?? error
        }
        switch result.value {
        case .success(let value)?: return value
        case .failure(let error)?: throw error
        case nil: throw ConnectionClosed()
        }
    }

    private static func connect<T: Sendable>(
        url: String, configuration: WebSocketClientConfiguration, trust: TLSTrust, logger: Logger, maxMessageBytes: Int,
        result: LockedBox<Result<T, any Error>?>, _ body: @escaping @Sendable (Connection) async throws -> T
    ) async throws {
        try await WebSocketClient.connect(
            url: url, configuration: configuration, tlsConfiguration: trust.clientConfiguration, logger: logger
        ) { inbound, outbound, _ in
            let connection = Connection(outbound: outbound)
            let endedFirst = LockedBox(false)
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        for try await message in inbound.messages(maxSize: maxMessageBytes) {
                            guard case .text(let text) = message else { continue }
                            connection.receive(text)
                        }
                    } catch {}
                    endedFirst.withLock { $0 = true }
                    connection.close()
                }
                group.addTask {
                    do {
                        let value = try await body(connection)
                        result.withLock { $0 = .success(value) }
                    } catch is CancellationError where endedFirst.value {
                        // The connection closed under `body`, which was cancelled for it: that
                        // is `ConnectionClosed` (left for `run` to throw), not a cancellation.
                    } catch {
                        result.withLock { $0 = .failure(error) }
                    }
                }
                await group.next()
                group.cancelAll()
                connection.close()
            }
        }
    }

    private func receive(_ text: String) {
        let message: ServerMessage
        do {
            message = try ServerMessage.decode(text.utf8)
        } catch {
            return
        }
        if let id = message.replyID {
            let result: Result<ServerMessage, any Error>
            if case .error(_, let code, let text, _) = message {
                result = .failure(TocsinError(.init(rawValue: code), text))
            } else {
                result = .success(message)
            }
            let (isReply, continuation) = state.withLock { s -> (Bool, CheckedContinuation<ServerMessage, any Error>?) in
                guard s.registered.remove(id) != nil else { return (false, nil) }
                if let c = s.waiting.removeValue(forKey: id) { return (true, c) }
                s.early[id] = result
                return (true, nil)
            }
            if isReply {
                continuation?.resume(with: result)
                return
            }
        }
        let handler = state.withLock { s -> (@Sendable (ServerMessage) -> Void)? in
            if s.handler == nil, s.buffering {
                s.pending.append(message)
                return { _ in }
            }
            return s.handler
        }
        if let handler { handler(message) } else { eventsContinuation.yield(message) }
    }

    /// From now on unsolicited frames are handed to `handler` on the connection's read task, in
    /// order, instead of going through `events` (one task hop less per notification). Frames that
    /// arrived since `bufferEvents()` are handed over first. `events` still finishes at close.
    public func handleEvents(with handler: @escaping @Sendable (ServerMessage) -> Void) {
        while true {
            let taken = state.withLock { s -> [ServerMessage] in
                if s.pending.isEmpty {
                    s.handler = handler
                    s.buffering = false
                    return []
                }
                defer { s.pending.removeAll() }
                return s.pending
            }
            if taken.isEmpty { return }
            for message in taken { handler(message) }
        }
    }

    /// Keeps unsolicited frames for a handler installed later with `handleEvents(with:)`.
    public func bufferEvents() {
        state.withLock { $0.buffering = true }
    }

    private func close() {
        let pending = state.withLock { s in
            s.closed = true
            let p = s.waiting
            s.waiting.removeAll()
            s.registered.removeAll()
            return p
        }
        for (_, c) in pending { c.resume(throwing: ConnectionClosed()) }
        eventsContinuation.finish()
    }

    /// Sends a frame that expects no reply (e.g. `ack`).
    /// - Throws: The WebSocket's error when the frame cannot be written (the connection closed).
    public func send(_ message: ClientMessage) async throws {
        try await outbound.write(.text(message.encoded))
    }

    /// Sends a text frame as is (for tools and tests of the protocol).
    public func send(text: String) async throws {
        try await outbound.write(.text(text))
    }

    /// Sends a request with a fresh id and waits for its reply. An `error` reply throws it as a `TocsinError`.
    /// - Parameter make: Builds the request from the id to use.
    /// - Returns: The reply with that id.
    /// - Throws: The broker's `error` reply as a `TocsinError`, or `ConnectionClosed` when the
    ///   connection closes first.
    public func request(_ make: (String) -> ClientMessage) async throws -> ServerMessage {
        let id: String = state.withLock { s in
            s.nextID += 1
            return String(s.nextID)
        }
        let message = make(id)
        let open = state.withLock { s in
            if !s.closed { s.registered.insert(id) }
            return !s.closed
        }
        guard open else { throw ConnectionClosed() }
        do {
            try await outbound.write(.text(message.encoded))
        } catch {
            state.withLock { s in
                s.registered.remove(id)
                s.early.removeValue(forKey: id)
            }
            throw error
        }
        return try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { s -> Result<ServerMessage, any Error>? in
                if let r = s.early.removeValue(forKey: id) { return r }
                if s.closed { return .failure(ConnectionClosed()) }
                s.waiting[id] = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    // MARK: The protocol's requests

    /// The broker's answer to `hello`.
    public struct Welcome: Sendable {
        /// This connection's session id.
        public var session: String
        /// The broker's id.
        public var broker: String
        /// The client id in use (the broker makes one up, `anon-…`, when none was given).
        public var client: String
        /// The client's durable subscriptions, resumed on this connection from their
        /// acknowledged positions.
        public var subscriptions: [SubscriptionInfo]
    }

    /// Identifies the client. With a client id the broker resumes its durable subscriptions
    /// (and closes another connection of the same id); without one the client is anonymous and
    /// its subscriptions end with the connection.
    /// - Parameters:
    ///   - client: The durable client id, or nil for an anonymous client (with a token: the token's).
    ///   - token: The access token, when the broker requires one (docs/security.md).
    /// - Throws: `TocsinError` (e.g. `bad_request` for an id the broker refuses, `unauthorized`,
    ///   `forbidden` for a token of another client), `ConnectionClosed`.
    public func hello(client: String?, token: String? = nil) async throws -> Welcome {
        let reply = try await request { .hello(id: $0, client: client, token: token) }
        guard case .welcome(_, let session, let broker, let client, let subs) = reply else { throw UnexpectedReply(reply) }
        return Welcome(session: session, broker: broker, client: client, subscriptions: subs)
    }

    /// Replaces the connection's token with a fresh one of the same client (before the broker's
    /// `token_expiring` deadline); returns when the new token expires (wall-clock ms).
    public func refresh(token: String) async throws -> Int64 {
        let reply = try await request { .refresh(id: $0, token: token) }
        guard case .refreshed(_, let expiresAt) = reply else { throw UnexpectedReply(reply) }
        return expiresAt
    }

    /// Subscribes to a channel with these parameters (an existing durable subscription of the
    /// client with the same parameters is resumed instead, from its acknowledged position).
    /// - Parameters:
    ///   - channel: The channel's name.
    ///   - params: Values for its parameters.
    ///   - from: Where a new subscription starts: `.latest` (the default), `.earliest` or a position.
    /// - Returns: The subscription: its id and the position delivery continues from.
    /// - Throws: `TocsinError` `unknown_channel`, `invalid_params` and the like; `ConnectionClosed`.
    public func subscribe(channel: String, params: [String: JSONValue], from: StartPosition = .latest) async throws -> SubscriptionInfo {
        let reply = try await request { .subscribe(id: $0, channel: channel, params: params, from: from) }
        guard case .subscribed(_, let info) = reply else { throw UnexpectedReply(reply) }
        return info
    }

    /// Ends a subscription (durable ones are deleted with their position).
    /// - Parameter subscription: The subscription's id.
    /// - Throws: `TocsinError` `unknown_subscription`; `ConnectionClosed`.
    public func unsubscribe(_ subscription: String) async throws {
        let reply = try await request { .unsubscribe(id: $0, subscription: subscription) }
        guard case .unsubscribed = reply else { throw UnexpectedReply(reply) }
    }

    /// Publishes events in one batch; returns their seqs after the broker committed them.
    /// Concurrent calls on one connection are pipelined: the broker commits them together and
    /// answers each in the order it was sent. With a `key` the stream already stored (within
    /// the broker's window), nothing is stored again and the first publish's seqs come back
    /// (use `request` with `.publish` to see the reply's `duplicate`).
    /// - Parameters:
    ///   - stream: The stream's name.
    ///   - events: The events, each a JSON object of the stream's schema.
    ///   - key: The publish's key (`PublishKey`), to make a retry store nothing twice.
    ///   - traceparent: The caller's W3C trace context, when it traces the publish: a broker that
    ///     records spans makes the publish, its commit and every delivery part of that trace.
    /// - Returns: The events' seqs, in order.
    /// - Throws: `TocsinError` `unknown_stream`, `schema_violation`, `too_large`, `store_full`…; `ConnectionClosed`.
    public func publish(stream: String, events: [JSONValue], key: String? = nil, traceparent: String? = nil) async throws -> [Int64] {
        let reply = try await request {
            .publish(id: $0, stream: stream, events: events, batch: events.count != 1, key: key, trace: traceparent)
        }
        guard case .published(_, _, _, let seqs, _) = reply else { throw UnexpectedReply(reply) }
        return seqs
    }

    /// Acknowledges a subscription's notifications up to and including `seq` (acks are
    /// cumulative): a reconnect resumes after it. The broker does not answer.
    /// - Throws: The WebSocket's error when the frame cannot be written.
    public func ack(subscription: String, seq: Int64) async throws {
        try await send(.ack(id: nil, subscription: subscription, seq: seq))
    }

    /// Reads a subscription's matching events after `after` (for notify delivery, which sends
    /// counts only).
    /// - Parameters:
    ///   - subscription: The subscription's id.
    ///   - after: Return events with a seq above this.
    ///   - limit: At most this many events (1–10,000).
    /// - Returns: The events, and the seq to pass as `after` to continue.
    /// - Throws: `TocsinError` `unknown_subscription`, `bad_request`; `ConnectionClosed`.
    public func fetch(subscription: String, after: Int64, limit: Int = 100) async throws -> (events: [EventPayload], seq: Int64) {
        let reply = try await request { .fetch(id: $0, subscription: subscription, after: after, limit: limit) }
        guard case .fetched(_, _, let events, let seq) = reply else { throw UnexpectedReply(reply) }
        return (events, seq)
    }

    /// Asks for a `pong`: the broker is there and answering.
    /// - Throws: `ConnectionClosed` when the connection closed first.
    public func ping() async throws {
        _ = try await request { .ping(id: $0) }
    }

    /// Upserts (records) and deletes (`{"delete": key}`) of this client's own records of a
    /// dataset (every key is the client's id), stored together. Returns the dataset's version
    /// after the write.
    public func write(dataset: String, _ writes: [JSONValue]) async throws -> Int64 {
        let reply = try await request { .write(id: $0, dataset: dataset, writes: writes) }
        guard case .written(_, _, let version, _) = reply else { throw UnexpectedReply(reply) }
        return version
    }
}

/// The connection closed before a reply arrived.
public struct ConnectionClosed: Error, Sendable, CustomStringConvertible {
    /// The error.
    public init() {}
    /// "the connection to the broker closed".
    public var description: String { "the connection to the broker closed" }
}

/// The broker answered a request with a frame of another kind than the request's reply.
public struct UnexpectedReply: Error, Sendable, CustomStringConvertible {
    /// What the broker answered.
    public var reply: ServerMessage
    init(_ reply: ServerMessage) { self.reply = reply }
    /// "unexpected reply: " and the frame.
    public var description: String { "unexpected reply: \(reply.encoded)" }
}

extension ServerMessage {
    /// The request id a reply answers, if it is a reply.
    var replyID: String? {
        switch self {
        case .welcome(let id, _, _, _, _), .subscribed(let id, _), .unsubscribed(let id, _, _), .published(let id, _, _, _, _),
            .fetched(let id, _, _, _), .pong(let id), .error(let id, _, _, _), .refreshed(let id, _),
            .written(let id, _, _, _):
            id
        case .notify, .migrate, .tokenExpiring:
            nil
        }
    }
}

/// A value shared between tasks behind a lock.
final class LockedBox<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}
