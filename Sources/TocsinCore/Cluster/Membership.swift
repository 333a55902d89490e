/// Broker registration and leases: a pure state machine.
///
/// Failure detection is lease expiry: a broker is alive while `now < leaseExpiresAt`, and only a
/// heartbeat (or a re-registration) pushes the lease forward by `leaseDuration`. The controller calls
/// `expire(now:)` on a timer and treats every record it returns as dead (its clients fail over).
///
/// Identity is `id` + `incarnation`:
/// - the same incarnation registering again is a retry: idempotent, the lease is renewed and the
///   fields are updated (state, load and `registeredAt` are kept);
/// - a new incarnation with the same id *and* the same two URLs is the same broker restarted: it
///   replaces the old record, which `register` returns as `replaced` so the controller can treat it
///   as dead at once rather than waiting for its lease;
/// - a new incarnation with the same id but another address while the lease is live is someone
///   else claiming the name: `.brokerIDInUse`, and nothing changes;
/// - once a lease has expired (`leaseExpiresAt <= now`) the id is free for anyone; a lapsed record
///   still held (because `expire` has not run yet) is returned as `replaced`, so the controller sees
///   the same "this one is dead" whether or not `expire` ran first.
///
/// Every method either succeeds or throws and changes nothing.
public struct Membership: Sendable {
    /// How long a registration or heartbeat keeps a broker alive.
    public var leaseDuration: Duration
    /// Every broker held, by id. May include brokers whose lease has lapsed since the last `expire(now:)`.
    public private(set) var brokers: [String: BrokerRecord]

    public init(leaseDuration: Duration) {
        precondition(leaseDuration > .zero, "Membership lease duration must be positive, got \(leaseDuration)")
        self.leaseDuration = leaseDuration
        self.brokers = [:]
    }

    /// Every broker held, sorted by id. Call `expire(now:)` first to drop lapsed ones, or use `live(at:)`.
    public var live: [BrokerRecord] {
        brokers.values.sorted { $0.id < $1.id }
    }

    /// The brokers whose lease is running at `now`, sorted by id.
    public func live(at now: ClusterTime) -> [BrokerRecord] {
        live.filter { $0.isLive(at: now) }
    }

    /// Registers a broker (see the type's documentation for the identity rules) and gives it a lease
    /// until `now + leaseDuration`. Returns the stored record and, when an older incarnation (or a
    /// lapsed record) was replaced, that old record.
    public mutating func register(
        _ request: RegistrationRequest,
        now: ClusterTime
    ) throws(TocsinError) -> (record: BrokerRecord, replaced: BrokerRecord?) {
        let request = try request.validated()
        let fresh = BrokerRecord(
            id: request.id,
            incarnation: request.incarnation,
            webSocketURL: request.webSocketURL,
            httpURL: request.httpURL,
            region: request.region,
            location: request.location,
            capacity: request.capacity,
            state: request.draining ? .draining : .active,
            load: .zero,
            registeredAt: now,
            leaseExpiresAt: now + leaseDuration
        )
        guard let existing = brokers[request.id] else {
            brokers[request.id] = fresh
            return (fresh, nil)
        }
        guard existing.isLive(at: now) else {
            // The old lease lapsed: the id is free, and the old holder is dead whoever takes it.
            brokers[request.id] = fresh
            return (fresh, existing)
        }
        if existing.incarnation == request.incarnation {
            // A retry of the same process's registration: renew and take the (possibly corrected) fields,
            // but keep what the broker has told us since (state, load) and when it first registered.
            var updated = existing
            updated.webSocketURL = request.webSocketURL
            updated.httpURL = request.httpURL
            updated.region = request.region
            updated.location = request.location
            updated.capacity = request.capacity
            updated.leaseExpiresAt = now + leaseDuration
            brokers[request.id] = updated
            return (updated, nil)
        }
        guard existing.webSocketURL == request.webSocketURL, existing.httpURL == request.httpURL else {
            throw TocsinError(
                .brokerIDInUse,
                "broker id \(quotedForMessage(request.id)) is held by a live broker at \(quotedForMessage(existing.webSocketURL)) "
                    + "(lease running); this registration is from \(quotedForMessage(request.webSocketURL))"
            )
        }
        // Same id, same address, new incarnation: the broker restarted. The old incarnation is dead.
        brokers[request.id] = fresh
        return (fresh, existing)
    }

    /// Renews the lease until `now + leaseDuration` and records `load`.
    ///
    /// `.unknownBroker` when the id is not held or its lease has lapsed at `now` (the broker must
    /// register again; a lapsed broker's clients have been failed over), `.staleIncarnation` when the
    /// id is held by another incarnation, `.badRequest` when a load figure is negative or not finite.
    public mutating func heartbeat(
        id: String,
        incarnation: String,
        load: BrokerLoad,
        now: ClusterTime
    ) throws(TocsinError) -> BrokerRecord {
        var record = try liveRecord(id: id, incarnation: incarnation, now: now)
        record.load = try load.validated()
        record.leaseExpiresAt = now + leaseDuration
        brokers[id] = record
        return record
    }

    /// Marks the broker draining: it is never given a new client and the rebalancer moves its clients
    /// away. It keeps serving meanwhile, so its lease still needs renewing by heartbeats; draining does
    /// not renew it (the lease reflects heartbeats only). Draining an already draining broker is a no-op.
    public mutating func drain(id: String, incarnation: String, now: ClusterTime) throws(TocsinError) -> BrokerRecord {
        var record = try liveRecord(id: id, incarnation: incarnation, now: now)
        record.state = .draining
        brokers[id] = record
        return record
    }

    /// Makes a draining broker active again (it takes new clients). A no-op when it is active.
    public mutating func undrain(id: String, incarnation: String, now: ClusterTime) throws(TocsinError) -> BrokerRecord {
        var record = try liveRecord(id: id, incarnation: incarnation, now: now)
        record.state = .active
        brokers[id] = record
        return record
    }

    /// Removes the broker (a clean shutdown). `.unknownBroker` if the id is not held,
    /// `.staleIncarnation` if another incarnation holds it (an old process must not remove its successor).
    public mutating func deregister(id: String, incarnation: String) throws(TocsinError) -> BrokerRecord {
        guard let record = brokers[id] else {
            throw TocsinError(.unknownBroker, "broker \(quotedForMessage(id)) is not registered")
        }
        guard record.incarnation == incarnation else { throw staleIncarnation(record, incarnation) }
        brokers[id] = nil
        return record
    }

    /// Replaces every record with `records` (a registry another controller wrote), each leased
    /// from `now`: the brokers must renew within `leaseDuration`, or they expire.
    public mutating func adopt(_ records: [BrokerRecord], now: ClusterTime) {
        brokers = [:]
        for var record in records {
            record.leaseExpiresAt = now + leaseDuration
            brokers[record.id] = record
        }
    }

    /// Removes and returns (sorted by id) every broker whose lease expired at or before `now`.
    public mutating func expire(now: ClusterTime) -> [BrokerRecord] {
        let expired = brokers.values.filter { !$0.isLive(at: now) }.sorted { $0.id < $1.id }
        for record in expired { brokers[record.id] = nil }
        return expired
    }

    // MARK: - Helpers

    private func liveRecord(id: String, incarnation: String, now: ClusterTime) throws(TocsinError) -> BrokerRecord {
        guard let record = brokers[id] else {
            throw TocsinError(.unknownBroker, "broker \(quotedForMessage(id)) is not registered; register again")
        }
        guard record.isLive(at: now) else {
            throw TocsinError(.unknownBroker, "the lease of broker \(quotedForMessage(id)) has expired; register again")
        }
        guard record.incarnation == incarnation else { throw staleIncarnation(record, incarnation) }
        return record
    }

    private func staleIncarnation(_ record: BrokerRecord, _ incarnation: String) -> TocsinError {
        TocsinError(
            .staleIncarnation,
            "broker \(quotedForMessage(record.id)) incarnation \(quotedForMessage(incarnation)) has been replaced by "
                + "incarnation \(quotedForMessage(record.incarnation))"
        )
    }
}
