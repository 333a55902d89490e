import Metrics
import Synchronization
import TocsinCore

/// Notify-then-fetch results computed once (the Big Active Data brokers' result cache): a
/// page of a subscription's matches depends only on its channel, its parameter values, where
/// the page starts, how long it may be and how far the stream reached, so every subscriber of
/// one interest that fetches after the same notification is served from one computation.
///
/// The stream's last seq is part of the key, so a page is never served past events that
/// arrived after it was computed; the epoch too, so a recreated stream starts afresh. Pages are
/// immutable once computed (enriched pages keep the dataset version they were computed at,
/// which they name). Bounded by entries and by bytes of event JSON; the oldest entry goes
/// first (results age fast: a notification's fetches come together). Off with `maxEntries` 0.
final class ResultCache: Sendable {
    struct Key: Hashable, Sendable {
        var channel: String
        var params: [Value]
        var epoch: String
        var lastSeq: Int64
        var after: Int64
        var limit: Int
        var maxScan: Int
    }

    struct Page: Sendable {
        var events: [EventPayload]
        var seq: Int64
    }

    private struct State {
        var pages: [Key: (page: Page, bytes: Int)] = [:]
        /// Insertion order, for eviction; keys already evicted or replaced are skipped.
        var order: [Key] = []
        var head = 0
        var bytes = 0
        /// Pages being computed, and who waits for them: concurrent fetches of one page (every
        /// subscriber of an interest, right after its notification) compute it once.
        var computing: [Key: [CheckedContinuation<Page?, Never>]] = [:]
    }

    let maxEntries: Int
    let maxBytes: Int
    private let state = Mutex(State())
    let hits = Atomic<Int>(0)
    let misses = Atomic<Int>(0)
    let evictions = Atomic<Int>(0)
    private let hitsMetric = Counter(label: "tocsin_fetch_cache_hits_total")
    private let missesMetric = Counter(label: "tocsin_fetch_cache_misses_total")
    private let evictionsMetric = Counter(label: "tocsin_fetch_cache_evictions_total")
    private let entriesMetric = Gauge(label: "tocsin_fetch_cache_entries")
    private let bytesMetric = Gauge(label: "tocsin_fetch_cache_bytes")

    init(maxEntries: Int, maxBytes: Int) {
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
    }

    var isEnabled: Bool { maxEntries > 0 }

    /// The page for `key`: from the cache, from a computation of it already under way, or
    /// computed by `compute` (and kept). A failed computation fails only its own caller; those
    /// who waited for it compute the page themselves.
    func page(_ key: Key, compute: () async throws(TocsinError) -> Page) async throws(TocsinError) -> Page {
        guard isEnabled else { return try await compute() }
        enum Found { case page(Page), wait, compute }
        let found = state.withLock { s -> Found in
            if let hit = s.pages[key] { return .page(hit.page) }
            if s.computing[key] != nil { return .wait }
            s.computing[key] = []
            return .compute
        }
        switch found {
        case .page(let page):
            counted(hit: true)
            return page
        case .wait:
            let shared = await withCheckedContinuation { (c: CheckedContinuation<Page?, Never>) in
                let now = state.withLock { s -> Page?? in
                    if let hit = s.pages[key] { return .some(hit.page) }
                    guard s.computing[key] != nil else { return .some(nil) }
                    s.computing[key]!.append(c)
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
            if let shared {
                counted(hit: true)
                return shared
            }
            counted(hit: false)
            return try await compute()
        case .compute:
            counted(hit: false)
            do {
                let page = try await compute()
                store(page, for: key)
                for w in state.withLock({ $0.computing.removeValue(forKey: key) ?? [] }) { w.resume(returning: page) }
                return page
            } catch {
                for w in state.withLock({ $0.computing.removeValue(forKey: key) ?? [] }) { w.resume(returning: nil) }
                throw error
            }
        }
    }

    private func counted(hit: Bool) {
        if hit {
            hits.add(1, ordering: .relaxed)
            hitsMetric.increment()
        } else {
            misses.add(1, ordering: .relaxed)
            missesMetric.increment()
        }
    }

    /// The cached page for `key`, if any (counted as a hit or a miss).
    func page(_ key: Key) -> Page? {
        guard isEnabled else { return nil }
        let page = state.withLock { $0.pages[key]?.page }
        counted(hit: page != nil)
        return page
    }

    func store(_ page: Page, for key: Key) {
        guard isEnabled else { return }
        let size = page.events.reduce(64) { $0 + $1.json.utf8.count + ($1.enriched?.utf8.count ?? 0) + 16 }
        guard size <= maxBytes else { return }
        let (evicted, entries, bytes) = state.withLock { s -> (Int, Int, Int) in
            if let old = s.pages.updateValue((page, size), forKey: key) {
                s.bytes -= old.bytes
            } else {
                s.order.append(key)
            }
            s.bytes += size
            var evicted = 0
            while s.pages.count > maxEntries || s.bytes > maxBytes, s.head < s.order.count {
                let oldest = s.order[s.head]
                s.head += 1
                if oldest == key {
                    // Just stored: it goes to the back instead.
                    s.order.append(key)
                } else if let gone = s.pages.removeValue(forKey: oldest) {
                    s.bytes -= gone.bytes
                    evicted += 1
                }
            }
            // Drop the consumed part of the order now and then (amortized O(1)).
            if s.head > 1024 && s.head * 2 > s.order.count {
                s.order.removeFirst(s.head)
                s.head = 0
            }
            return (evicted, s.pages.count, s.bytes)
        }
        if evicted > 0 {
            evictions.add(evicted, ordering: .relaxed)
            evictionsMetric.increment(by: Int64(evicted))
        }
        entriesMetric.record(entries)
        bytesMetric.record(bytes)
    }

    var count: Int { state.withLock { $0.pages.count } }
}
