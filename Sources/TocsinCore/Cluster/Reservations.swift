/// The brokers `Placement.reserve` recently gave clients, by client id: a map with expiry and a size
/// bound. Entries are forgotten in the order they were made (a repeat that keeps its broker does not
/// renew one), so expiry walks a queue from its front and never scans the map.
struct Reservations: Sendable {
    struct Entry: Sendable, Hashable {
        var brokerID: String
        /// The broker's incarnation when the reservation was made: a restarted broker holds none of them.
        var incarnation: String
        var expiresAt: ClusterTime
        /// The broker's report count (`Placement`'s per-slot counter) when the client was counted on
        /// it; the client is in the broker's count while that counter has not moved. Nil: not counted.
        var countedInReport: Int?
        /// Order of making, to tell a queued entry from a newer one for the same client.
        var sequence: UInt64 = 0
    }

    private(set) var byClient: [String: Entry] = [:]
    /// (client, sequence) in the order made; may hold superseded items, skipped when met.
    private var queue: [(client: String, sequence: UInt64)] = []
    private var head = 0
    private var nextSequence: UInt64 = 0

    /// Adds or replaces the client's reservation; it is the newest.
    mutating func insert(_ client: String, _ entry: Entry) {
        var entry = entry
        entry.sequence = nextSequence
        nextSequence += 1
        byClient[client] = entry
        queue.append((client, entry.sequence))
        compactIfSparse()
    }

    /// Forgets the client without telling anyone (the caller has dealt with its count).
    mutating func remove(_ client: String) {
        byClient[client] = nil
    }

    /// The entries, oldest first.
    var inOrder: [(client: String, entry: Entry)] {
        byClient.sorted { $0.value.sequence < $1.value.sequence }.map { ($0.key, $0.value) }
    }

    /// Drops and returns every reservation expired at `now` (`expiresAt <= now`).
    mutating func expire(now: ClusterTime) -> [Entry] {
        var dropped: [Entry] = []
        while let oldest = oldest(), oldest.expiresAt <= now, let entry = popOldest() {
            dropped.append(entry)
        }
        return dropped
    }

    /// Drops and returns the oldest reservations while more than `limit` are held.
    mutating func trim(to limit: Int) -> [Entry] {
        var dropped: [Entry] = []
        while byClient.count > max(0, limit), let entry = popOldest() {
            dropped.append(entry)
        }
        return dropped
    }

    // MARK: - Internals

    /// The oldest live entry, skipping (and discarding) superseded queue items.
    private mutating func oldest() -> Entry? {
        while head < queue.count {
            let item = queue[head]
            if let entry = byClient[item.client], entry.sequence == item.sequence { return entry }
            head += 1
        }
        return nil
    }

    private mutating func popOldest() -> Entry? {
        guard oldest() != nil, let entry = byClient.removeValue(forKey: queue[head].client) else { return nil }
        head += 1
        compactIfSparse()
        return entry
    }

    /// Keeps the queue within a small multiple of the live entries.
    private mutating func compactIfSparse() {
        let held = queue.count - head
        guard (head > 1024 && head * 2 > queue.count) || held > 2 * byClient.count + 1024 else { return }
        queue = queue[head...].filter { item in byClient[item.client]?.sequence == item.sequence }
        head = 0
    }
}
