/// A token bucket: `rate` tokens a second up to `burst`; a request costing `cost` passes when
/// the bucket holds that many. Time is the caller's (milliseconds of any monotonic clock).
public struct TokenBucket: Sendable, Hashable {
    public var rate: Double
    public var burst: Double
    /// Tokens held at `updatedAt`.
    public private(set) var tokens: Double
    public private(set) var updatedAt: Int64

    public init(rate: Double, burst: Double, now: Int64) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updatedAt = now
    }

    /// Takes `cost` tokens, or says how many milliseconds until they are there (nil: never,
    /// the cost is above the burst).
    public mutating func take(_ cost: Double, now: Int64) -> Decision {
        refill(now: now)
        // A hair of slack: the refill after exactly the wait it was told must pass.
        if tokens >= cost - 1e-9 {
            tokens = max(0, tokens - cost)
            return .allowed
        }
        guard cost <= burst, rate > 0 else { return .refused(retryAfterMillis: nil) }
        return .refused(retryAfterMillis: Int64(((cost - tokens) / rate * 1000).rounded(.up)))
    }

    /// Whether the bucket is full at `now` (it can be forgotten: a new one starts full).
    public func isFull(now: Int64) -> Bool {
        var copy = self
        copy.refill(now: now)
        return copy.tokens >= burst
    }

    private mutating func refill(now: Int64) {
        let elapsed = max(0, now - updatedAt)
        tokens = min(burst, tokens + Double(elapsed) * rate / 1000)
        updatedAt = max(updatedAt, now)
    }

    public enum Decision: Sendable, Hashable {
        case allowed
        /// `retryAfterMillis` nil: the request is larger than the bucket ever holds.
        case refused(retryAfterMillis: Int64?)
    }
}

/// One token bucket per key (a client id, or an address without authentication), for one kind
/// of request. Memory is bounded: past `maxKeys`, buckets that refilled are forgotten first
/// (they would start full anyway), and if none has, the oldest-updated go — a flood of new keys
/// costs the flooders their history, not the broker its memory. Pure: the owner holds it under
/// a lock and acts on the decision outside.
public struct RateLimiter: Sendable {
    public struct Limit: Sendable, Hashable {
        /// Requests (or events) a second, sustained; 0 or less: unlimited.
        public var perSecond: Double
        /// How many may come at once after a quiet spell.
        public var burst: Double

        public init(perSecond: Double, burst: Double) {
            self.perSecond = perSecond
            self.burst = burst
        }

        public static let unlimited = Limit(perSecond: 0, burst: 0)
        public var isUnlimited: Bool { perSecond <= 0 }
    }

    public private(set) var limit: Limit
    public let maxKeys: Int
    private var buckets: [String: TokenBucket] = [:]

    public init(_ limit: Limit, maxKeys: Int = 100_000) {
        self.limit = limit
        self.maxKeys = max(1, maxKeys)
    }

    public var count: Int { buckets.count }

    public mutating func take(_ key: String, cost: Double = 1, now: Int64) -> TokenBucket.Decision {
        guard !limit.isUnlimited else { return .allowed }
        if buckets[key] == nil, buckets.count >= maxKeys { evict(now: now) }
        var bucket = buckets[key] ?? TokenBucket(rate: limit.perSecond, burst: limit.burst, now: now)
        let decision = bucket.take(cost, now: now)
        buckets[key] = bucket
        return decision
    }

    /// Changes the limit (live configuration). Each client keeps the tokens it has, capped at
    /// the new burst, and refills at the new rate from now on.
    public mutating func retune(_ limit: Limit) {
        guard limit != self.limit else { return }
        self.limit = limit
        for key in buckets.keys {
            buckets[key]?.rate = limit.perSecond
            buckets[key]?.burst = limit.burst
        }
    }

    /// Forgets full buckets; if that frees nothing, the least recently updated tenth.
    private mutating func evict(now: Int64) {
        buckets = buckets.filter { !$0.value.isFull(now: now) }
        guard buckets.count >= maxKeys else { return }
        let oldest = buckets.sorted { $0.value.updatedAt < $1.value.updatedAt }.prefix(max(1, maxKeys / 10))
        for (key, _) in oldest { buckets[key] = nil }
    }
}
