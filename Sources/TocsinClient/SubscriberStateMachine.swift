import TocsinCore

/// The decisions of a `Subscriber`, free of sockets, tasks and clocks: fed what happened (a
/// broker was found, a connection was resumed, a frame arrived, a connection ended, a timer
/// fired, the app processed a notification, the app stopped), it says what to do next.
/// `Subscriber` holds it behind a lock and carries the actions out.
///
/// It manages at most two connections: the current one and, during a migration, the one
/// replacing it (make-before-break). It delivers each seq of a subscription once, whichever
/// connection it arrives on, and carries positions across connections. It batches acks.
///
/// Time is a `Duration` since the subscriber started (`Instant`), passed in with each event that
/// needs it; the random draw of a backoff (`jitter`, uniform in 0...1) is passed in too.
struct SubscriberStateMachine: Sendable {
    /// Identifies one connection attempt; never reused.
    typealias ConnectionID = Int
    /// Time since the subscriber started.
    typealias Instant = Duration

    /// Where a connection goes: a broker's WebSocket URL, and its id when known.
    struct Target: Sendable, Hashable {
        var url: String
        var broker: String?

        init(url: String, broker: String? = nil) {
            self.url = url
            self.broker = broker
        }
    }

    /// Where the subscriber is in finding and keeping a broker.
    enum Phase: Sendable, Hashable {
        /// Not started.
        case idle
        /// Waiting out a backoff before looking for a broker again.
        case waiting(until: Instant)
        /// Asking which broker to use.
        case locating
        /// The current connection is opening (connect, hello, subscribe).
        case connecting(ConnectionID)
        /// The current connection is resumed and delivering.
        case connected(ConnectionID)
        /// `from` delivers while `to`, where the broker sent this client, opens.
        case migrating(from: ConnectionID, to: ConnectionID, reason: String)
        /// The move failed: `from` is being closed, and a reconnect through `locate` follows
        /// when it has ended (the old broker wants this client gone and will not ask again).
        case leaving(ConnectionID)
        /// Stopped; nothing happens any more.
        case stopped
    }

    enum Timer: Sendable, Hashable {
        /// The backoff is over: look for a broker.
        case reconnect
        /// Acknowledge what the app processed.
        case ack
    }

    enum Action: Sendable, Equatable {
        /// Find a broker to connect to, avoiding `exclude` (broker ids that just failed); answer
        /// with `located` or `locateFailed`.
        case locate(exclude: Set<String>)
        /// Open connection `id`; when it is open, ask `connected(_:)` what to send.
        case connect(ConnectionID, to: Target)
        /// Call `timerFired` at `at` (replacing any earlier request for the same timer).
        case schedule(Timer, at: Instant)
        /// Send these cumulative acks (newest processed seq per subscription) on `id`; answer with
        /// `acksSent` or `acksFailed`.
        case ack([String: Int64], on: ConnectionID)
        /// Close connection `id` (its end is still reported with `connectionEnded`).
        case close(ConnectionID)
        /// Hand the app this event.
        case report(Subscriber.Event)
        case log(LogLevel, String, error: String)
        /// End the app's sequence of events.
        case finish
    }

    enum LogLevel: Sendable, Equatable {
        case warning, error
    }

    /// What to do on a connection that has just opened.
    enum Resume: Sendable, Equatable {
        /// Say hello, then subscribe these (the first time from where the caller asked, later
        /// from the acknowledged position, `.latest`).
        case resume([SubscriptionRequest])
        /// The connection is no longer wanted.
        case close
    }

    /// What to do with a notification.
    enum Delivery: Sendable, Equatable {
        case deliver(Notification)
        /// Its seq was delivered already (by this connection or another).
        case duplicate
    }

    struct Counts: Sendable, Hashable {
        var duplicatesDropped = 0
        var migrationsFollowed = 0
        var reconnections = 0
    }

    let requests: [SubscriptionRequest]
    let backoff: Backoff
    let ackInterval: Duration
    let ackEvery: Int

    private(set) var phase: Phase = .idle
    private(set) var counts = Counts()
    /// Live connections (opening, resumed, or closing) and the broker each is to.
    private var links: [ConnectionID: String] = [:]
    private var lastID: ConnectionID = 0
    /// Failed attempts since the last successful connection; sets the next backoff.
    private(set) var attempt = 0
    /// Brokers that failed since the last successful connection.
    private(set) var exclude: Set<String> = []
    /// Whether the requests were subscribed once (afterwards the broker resumes them).
    private var subscribedOnce = false
    /// Last seq delivered per subscription, and its epoch.
    private(set) var positions: [String: StreamPosition] = [:]
    private var channels: [String: String] = [:]
    /// Processed and not yet acknowledged: per subscription the newest seq, and how many.
    private(set) var unacked: [String: Int64] = [:]
    private var unackedCount = 0
    private var ackDue: Instant?
    private var ackInFlight = false

    init(requests: [SubscriptionRequest], backoff: Backoff, ackInterval: Duration, ackEvery: Int) {
        self.requests = requests
        self.backoff = backoff
        self.ackInterval = ackInterval
        self.ackEvery = ackEvery
    }

    // MARK: Finding a broker

    mutating func start() -> [Action] {
        guard phase == .idle else { return [] }
        phase = .locating
        return [.locate(exclude: exclude)]
    }

    mutating func located(_ target: Target) -> [Action] {
        guard phase == .locating else { return [] }
        let id = open(target)
        phase = .connecting(id)
        return [.connect(id, to: target)]
    }

    mutating func locateFailed(error: String, now: Instant, jitter: Double) -> [Action] {
        guard phase == .locating else { return [] }
        let retry = nextDelay(jitter: jitter)
        phase = .waiting(until: now + retry)
        return [.report(.disconnected(error: error, retryIn: retry)), .schedule(.reconnect, at: now + retry)]
    }

    mutating func timerFired(_ timer: Timer, now: Instant) -> [Action] {
        switch timer {
        case .reconnect:
            guard case .waiting(let until) = phase else { return [] }
            guard now >= until else { return [.schedule(.reconnect, at: until)] }
            phase = .locating
            return [.locate(exclude: exclude)]
        case .ack:
            guard let due = ackDue, phase != .stopped else { return [] }
            guard now >= due else { return [.schedule(.ack, at: due)] }
            ackDue = nil
            return sendAcks()
        }
    }

    // MARK: Connections

    /// Connection `id` is open: what to send on it.
    mutating func connected(_ id: ConnectionID) -> Resume {
        guard links[id] != nil, phase != .stopped else { return .close }
        if subscribedOnce { return .resume(requests.map { SubscriptionRequest(channel: $0.channel, params: $0.params, from: .latest) }) }
        return .resume(requests)
    }

    /// Connection `id` said hello and subscribed: `subscriptions` as the broker reported them.
    mutating func resumed(_ id: ConnectionID, broker: String, subscriptions: [SubscriptionInfo], now: Instant) -> [Action] {
        guard links[id] != nil, phase != .stopped else { return [] }
        links[id] = broker
        subscribedOnce = true
        var actions: [Action] = []
        for info in subscriptions { actions += note(info) }
        switch phase {
        case .connecting(id):
            phase = .connected(id)
            attempt = 0
            exclude = []
            actions.append(.report(.connected(broker: broker, subscriptions: subscriptions)))
        case .migrating(let from, id, let reason):
            // Make-before-break: the new connection is resumed; now close the old one.
            phase = .connected(id)
            counts.migrationsFollowed += 1
            actions.append(.close(from))
            actions.append(.report(.migrated(from: links[from] ?? "?", to: broker, reason: reason)))
        default:
            // Nobody waits for this connection (cannot happen while the phases hold).
            actions.append(.close(id))
            return actions
        }
        // Acks a previous connection could not send.
        if unackedCount > 0, ackDue == nil, !ackInFlight {
            ackDue = now + ackInterval
            actions.append(.schedule(.ack, at: now + ackInterval))
        }
        return actions
    }

    /// The broker of connection `id` orders this client to `target`.
    mutating func migrateOrdered(_ id: ConnectionID, to target: Target, reason: String) -> [Action] {
        guard phase == .connected(id) else { return [] }
        let new = open(target)
        phase = .migrating(from: id, to: new, reason: reason)
        return [.connect(new, to: target)]
    }

    /// Connection `id` closed, failed to open, or did not resume in time.
    mutating func connectionEnded(_ id: ConnectionID, error: String, now: Instant, jitter: Double) -> [Action] {
        guard let broker = links.removeValue(forKey: id) else { return [] }
        switch phase {
        case .migrating(let from, id, _):
            // The move failed. The old broker wants this client gone and will not ask again:
            // leave it too, and reconnect wherever `locate` says (with backoff).
            phase = .leaving(from)
            return [.log(.warning, "migration failed; reconnecting through assign", error: error), .close(from)]
        case .migrating(id, let to, _):
            // The old broker went away mid-move: the new connection carries on.
            phase = .connecting(to)
            return []
        case .connecting(id), .connected(id), .leaving(id):
            exclude.insert(broker)
            let retry = nextDelay(jitter: jitter)
            counts.reconnections += 1
            phase = .waiting(until: now + retry)
            return [
                .log(.warning, "connection lost; reconnecting", error: error), .report(.disconnected(error: error, retryIn: retry)),
                .schedule(.reconnect, at: now + retry),
            ]
        default:
            return []
        }
    }

    /// A request on connection `id` can never succeed as given (unknown channel, invalid
    /// parameters): stop.
    mutating func connectionFailed(_ id: ConnectionID, error: TocsinError) -> [Action] {
        guard phase != .stopped else { return [] }
        phase = .stopped
        var actions: [Action] = [.log(.error, "subscription request refused; stopping", error: "\(error.code): \(error.message)")]
        actions += links.keys.sorted().map { .close($0) }
        actions += [.report(.failed(error)), .finish]
        return actions
    }

    /// The app stopped iterating: acknowledge what it finished, close everything, finish.
    mutating func stop() -> [Action] {
        guard phase != .stopped else { return [] }
        var actions: [Action] = []
        if unackedCount > 0, let on = readyConnection {
            actions.append(.ack(takeUnacked(), on: on))
        }
        phase = .stopped
        ackDue = nil
        actions += links.keys.sorted().map { .close($0) }
        actions.append(.finish)
        return actions
    }

    // MARK: Frames

    /// A notification arrived on any connection: deliver it unless its seq was delivered.
    mutating func received(subscription: String, seq: Int64, _ n: ServerMessage.Notification) -> Delivery {
        let last = positions[subscription]?.seq
        if let last, seq <= last {
            counts.duplicatesDropped += 1
            return .duplicate
        }
        positions[subscription]?.seq = seq
        let channel = channels[subscription] ?? ""
        switch n {
        case .event(let json):
            return .deliver(
                Notification(subscription: subscription, channel: channel, seq: seq, events: [EventPayload(seq: seq, json: json)], count: 1)
            )
        case .enrichedEvent(let json, let enriched):
            let event = EventPayload(seq: seq, json: json, enriched: enriched)
            return .deliver(Notification(subscription: subscription, channel: channel, seq: seq, events: [event], count: 1))
        case .events(let events):
            // A period's batch may overlap what another connection delivered: keep only the new events.
            let fresh = last.map { l in events.filter { $0.seq > l } } ?? events
            return .deliver(Notification(subscription: subscription, channel: channel, seq: seq, events: fresh, count: fresh.count))
        case .count(let c):
            return .deliver(Notification(subscription: subscription, channel: channel, seq: seq, events: [], count: c))
        }
    }

    /// A `subscribed` frame without a request: a subscription reset (a new epoch) or taken over.
    mutating func subscriptionChanged(_ info: SubscriptionInfo) -> [Action] {
        phase == .stopped ? [] : note(info)
    }

    // MARK: Acks

    /// The app finished the notification of `seq` (it asked for the next one).
    mutating func processed(subscription: String, seq: Int64, now: Instant) -> [Action] {
        guard phase != .stopped else { return [] }
        if seq > (unacked[subscription] ?? .min) { unacked[subscription] = seq }
        unackedCount += 1
        if unackedCount >= ackEvery, !ackInFlight {
            ackDue = nil
            return sendAcks()
        }
        guard ackDue == nil, !ackInFlight else { return [] }
        ackDue = now + ackInterval
        return [.schedule(.ack, at: now + ackInterval)]
    }

    mutating func acksSent(now: Instant) -> [Action] {
        ackInFlight = false
        guard phase != .stopped, unackedCount > 0 else { return [] }
        if unackedCount >= ackEvery { return sendAcks() }
        guard ackDue == nil else { return [] }
        ackDue = now + ackInterval
        return [.schedule(.ack, at: now + ackInterval)]
    }

    /// Sending failed: keep `unsent` for the next try (newer positions win).
    mutating func acksFailed(unsent: [String: Int64], now: Instant) -> [Action] {
        ackInFlight = false
        for (subscription, seq) in unsent where seq > (unacked[subscription] ?? .min) { unacked[subscription] = seq }
        unackedCount += unsent.count
        guard phase != .stopped, readyConnection != nil, ackDue == nil, unackedCount > 0 else { return [] }
        ackDue = now + ackInterval
        return [.schedule(.ack, at: now + ackInterval)]
    }

    // MARK: Helpers

    /// The resumed connection acks go on: the current one (the old one, during a move).
    private var readyConnection: ConnectionID? {
        switch phase {
        case .connected(let id), .migrating(let id, _, _): id
        default: nil
        }
    }

    private mutating func open(_ target: Target) -> ConnectionID {
        lastID += 1
        links[lastID] = target.broker ?? target.url
        return lastID
    }

    private mutating func nextDelay(jitter: Double) -> Duration {
        defer { attempt += 1 }
        return backoff.delay(attempt: attempt, random: jitter)
    }

    private mutating func sendAcks() -> [Action] {
        guard unackedCount > 0, let on = readyConnection else { return [] }
        ackInFlight = true
        return [.ack(takeUnacked(), on: on)]
    }

    private mutating func takeUnacked() -> [String: Int64] {
        defer {
            unacked = [:]
            unackedCount = 0
        }
        return unacked
    }

    private mutating func note(_ info: SubscriptionInfo) -> [Action] {
        if !info.channel.isEmpty { channels[info.subscription] = info.channel }
        // A new subscription, or a new epoch: seqs restart from the broker's position.
        if positions[info.subscription]?.epoch != info.position.epoch { positions[info.subscription] = info.position }
        return info.recovered ? [] : [.report(.notRecovered(info))]
    }
}
