import Foundation
import TocsinCore

/// Turns the broker's running totals into per-second rates between two heartbeats.
struct LoadMeter {
    let totals: BrokerMetrics.Totals
    private var last = ContinuousClock.now
    private var delivered = 0
    private var published = 0
    private var cpuSeconds = LoadMeter.processCPUSeconds()

    init(totals: BrokerMetrics.Totals) {
        self.totals = totals
        delivered = totals.delivered.load(ordering: .relaxed)
        published = totals.published.load(ordering: .relaxed)
    }

    mutating func sample(_ current: (connections: Int, subscriptions: Int, migrating: Int)) -> BrokerLoad {
        let now = ContinuousClock.now
        let elapsed = max(0.001, Double((now - last).components.attoseconds) / 1e18 + Double((now - last).components.seconds))
        let d = totals.delivered.load(ordering: .relaxed)
        let p = totals.published.load(ordering: .relaxed)
        let cpu = Self.processCPUSeconds()
        defer {
            last = now
            delivered = d
            published = p
            cpuSeconds = cpu
        }
        let latency = totals.latency.withLock { w in
            defer { w = LatencyWindow() }
            return w
        }
        var load = BrokerLoad(
            connections: current.connections, subscriptions: current.subscriptions,
            deliveriesPerSecond: Double(d - delivered) / elapsed, publishesPerSecond: Double(p - published) / elapsed,
            cpu: max(0, (cpu - cpuSeconds) / elapsed), migrating: current.migrating)
        load.latencyP50Millis = latency.percentile(0.5)
        load.latencyP99Millis = latency.percentile(0.99)
        return load
    }

    /// User + system CPU time of this process.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        #if canImport(Glibc)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
