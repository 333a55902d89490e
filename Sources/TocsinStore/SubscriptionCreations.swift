import TocsinCore

/// A batch of durable subscriptions to open, decided together as if they had run one after
/// another in the batch's order: a request finds an existing subscription with its key (client,
/// channel and parameters: stored, or created earlier in the batch) and resumes it; otherwise it
/// creates one, unless its client already holds `maxPerClient`, then it is refused alone.
///
/// Pure: the store reads what the batch's keys and clients hold, asks `decide` what to do, and
/// inserts the subscriptions it says to, in one transaction (`PostgresStore.openSubscriptions`).
enum SubscriptionCreations {
    struct Request: Sendable {
        var client: String
        var channel: String
        var params: [String: JSONValue]
        /// `params` serialized: the stored form and part of the key.
        var paramsText: String
        var initial: StreamPosition
        var maxPerClient: Int?
        /// The id it gets if it creates one.
        var newID: String
    }

    struct Key: Hashable {
        var client: String
        var channel: String
        var paramsText: String
    }

    enum Outcome: Equatable {
        /// It found this subscription (stored, or created by an earlier request of the batch).
        case resumed(SubscriptionRecord)
        /// It creates this one: the store inserts it.
        case created(SubscriptionRecord)
        /// Its client holds this many already, the most it may.
        case refused(held: Int, limit: Int)
    }

    /// What each request does, in order. `stored` holds the subscriptions already stored under
    /// the batch's keys; `held` how many each of its clients holds (a client not in it holds none).
    static func decide(_ requests: [Request], stored: [Key: SubscriptionRecord], held: [String: Int]) -> [Outcome] {
        var found = stored
        var held = held
        return requests.map { request in
            let key = Key(client: request.client, channel: request.channel, paramsText: request.paramsText)
            if let existing = found[key] { return .resumed(existing) }
            let holds = held[request.client, default: 0]
            if let limit = request.maxPerClient, holds >= limit { return .refused(held: holds, limit: limit) }
            let record = SubscriptionRecord(
                id: request.newID, client: request.client, channel: request.channel, params: request.params, epoch: request.initial.epoch,
                ackedSeq: request.initial.seq)
            found[key] = record
            held[request.client] = holds + 1
            return .created(record)
        }
    }
}

extension TocsinError {
    /// A client that would hold more durable subscriptions than `maxPerClient` allows.
    static func tooManySubscriptions(client: String, held: Int, limit: Int) -> TocsinError {
        TocsinError(
            .tooManySubscriptions,
            "client '\(client)' already has \(held) subscriptions, the most a client may have (\(limit)); unsubscribe from some first")
    }
}
