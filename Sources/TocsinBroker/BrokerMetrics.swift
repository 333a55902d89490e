import Metrics
import Synchronization
import TocsinCore

/// The broker's metrics, with stable names (swift-metrics; exported by whatever backend the
/// process bootstraps).
struct BrokerMetrics: Sendable {
    let publishedEvents = Counter(label: "tocsin_published_events_total")
    let publishRejected = Counter(label: "tocsin_publish_rejected_total")
    /// Publishes not stored because their key had been (`PublishKey`).
    let publishDuplicates = Counter(label: "tocsin_publish_duplicates_total")
    let sessionsOpened = Counter(label: "tocsin_sessions_opened_total")
    let sessionsClosed = Counter(label: "tocsin_sessions_closed_total")
    let slowConsumers = Counter(label: "tocsin_slow_consumer_disconnects_total")
    /// WebSocket connections closed for sending no first message in time.
    let timeouts = Counter(label: "tocsin_websocket_timeouts_total")
    let protocolErrors = Counter(label: "tocsin_protocol_errors_total")
    let deliveredNotifications = Counter(label: "tocsin_notifications_sent_total")
    let replayedEvents = Counter(label: "tocsin_replayed_notifications_total")
    let migrationsOrdered = Counter(label: "tocsin_migrations_ordered_total")
    /// Migrate orders refused because they came from a deposed controller (a lower epoch than
    /// the highest this broker has seen).
    let staleOrdersRefused = Counter(label: "tocsin_stale_orders_refused_total")
    /// The live configuration version in force (set once the controller sent one).
    let configVersion = Gauge(label: "tocsin_config_version")
    /// Stored events that did not read back against their stream's schema (so could not be matched).
    let unreadableEvents = Counter(label: "tocsin_unreadable_events_total")
    /// The store: bytes in use, and its limit (`StoreUsage.maxBytes`; 0 when there is none).
    let storeUsedBytes = Gauge(label: "tocsin_store_used_bytes")
    let storeMaxBytes = Gauge(label: "tocsin_store_max_bytes")
    /// Totals the broker reads back for its load reports (swift-metrics counters are write-only).
    let totals = Totals()

    final class Totals: Sendable {
        let delivered = Atomic<Int>(0)
        let published = Atomic<Int>(0)
        /// Commit → notification decided since the last heartbeat (`LoadMeter` takes it).
        let latency = Mutex(LatencyWindow())
    }
    /// The same latency for Prometheus (a histogram).
    let notifyLatency = Timer(label: "tocsin_commit_to_notify_seconds")
}
