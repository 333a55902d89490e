import Foundation
import Testing

@testable import TocsinLoad

/// The reports print what `tocsin bench` printed before it was a library, line for line
/// (docs/performance.md quotes them), and the numbers they rest on.
@Suite struct ReportTests {
    @Test func percentilesAreTheSampleAtEachQuantile() {
        let d = LatencyDistribution((1...1000).reversed().map { Int64($0) * 1_000_000 })
        #expect(d.at(0.5) == 501_000_000)
        #expect(d.at(0.999) == 1_000_000_000)
        #expect(d.at(1) == 1_000_000_000)
        #expect(
            d.description
                == "p50 501.000 ms, p90 901.000 ms, p99 991.000 ms, p99.9 1000.000 ms, max 1000.000 ms (1000 samples)")
        #expect(LatencyDistribution([]).description == "no samples")
        #expect(LatencyDistribution([]).at(0.5) == nil)
    }

    @Test func latencyReportPrintsTheBenchLines() {
        var report = LatencyReport(
            subscribers: 100, published: 2500, delivered: 249_990, latency: LatencyDistribution([1_158_000, 2_134_000]),
            server: .init(cpuSeconds: 2.63, wallSeconds: 5.0, contextSwitches: 23_870), machine: nil,
            serverMemory: .init(residentKiB: 51_200, peakKiB: 52_000))
        #expect(
            report.description.split(separator: "\n", omittingEmptySubsequences: false) == [
                "delivered 249990 of 250000 expected notifications (10 missing after a 2 s settle)",
                "publish→notify latency: p50 2.134 ms, p90 2.134 ms, p99 2.134 ms, p99.9 2.134 ms, max 2.134 ms (2 samples)",
                "server CPU: 2.63 s over 5.0 s wall (53% of one core); 10.52 µs per delivered notification",
                "server context switches: 9.5 per published event (4774/s, all threads)",
                "server memory: 50 MiB resident, peak 50 MiB",
            ])
        // Several spawned brokers: their figures are summed, and it says so.
        report.brokers = 2
        report.databaseCPUSeconds = 1.25
        #expect(
            report.description.split(separator: "\n").suffix(4) == [
                "servers (2 brokers, summed) CPU: 2.63 s over 5.0 s wall (53% of one core); 10.52 µs per delivered notification",
                "servers (2 brokers, summed) context switches: 9.5 per published event (4774/s, all threads)",
                "PostgreSQL CPU: 1.25 s over 5.0 s wall (25% of one core); 500.0 µs per published event",
                "servers (2 brokers, summed) memory: 50 MiB resident, peak 50 MiB",
            ])
        // A broker given by URL: no server figures.
        report.server = nil
        report.serverMemory = nil
        #expect(report.description.split(separator: "\n").count == 2)
    }

    @Test func throughputReportPrintsTheBenchLines() {
        let report = ThroughputReport(
            published: 25_058, wallSeconds: 4.0, latency: LatencyDistribution([1_855_000]), serverCPUSeconds: 2.06, machine: nil)
        #expect(
            report.description.split(separator: "\n") == [
                "durable publishes: 25058 in 4.0 s = 6264 events/s",
                "publish→published latency: p50 1.855 ms, p90 1.855 ms, p99 1.855 ms, p99.9 1.855 ms, max 1.855 ms (1 samples)",
                "server CPU: 2.06 s (82.2 µs per event)",
            ])
        var three = report
        three.brokers = 3
        three.databaseCPUSeconds = 1.5
        #expect(
            three.description.split(separator: "\n").suffix(2) == [
                "servers (3 brokers, summed) CPU: 2.06 s (82.2 µs per event)", "PostgreSQL CPU: 1.50 s (59.9 µs per event)",
            ])
    }

    @Test func aSpawnThatCannotRunSaysWhy() {
        let tocsin = "/usr/bin/tocsin"
        #expect(BenchTarget.Spawn(executable: tocsin).problem == nil)
        #expect(BenchTarget.Spawn(executable: tocsin, brokers: 3, store: .throwawayPostgres).problem == nil)
        #expect(BenchTarget.Spawn(executable: tocsin, brokers: 2, store: .postgres("postgres://tocsin@db/tocsin")).problem == nil)
        #expect(BenchTarget.Spawn(executable: tocsin, brokers: 2).problem?.contains("PostgreSQL") == true)
        #expect(BenchTarget.Spawn(executable: tocsin, brokers: 0, store: .throwawayPostgres).problem?.contains("1...200") == true)
        #expect(BenchTarget.Spawn(executable: tocsin, noFsync: true, store: .throwawayPostgres).problem?.contains("--no-fsync") == true)
        #expect(
            BenchTarget.Spawn(executable: tocsin, store: .postgres("postgres://tocsin@db/tocsin"), namespaces: true).problem?
                .contains("--postgres") == true)
    }

    @Test func networkReportPrintsTheBenchLines() {
        var report = NetworkReport(
            subscribers: 200, published: 120, publishFailures: 0, expected: 24_000, settled: true, duplicatesDropped: 1872,
            perBrokerAtEnd: ["broker-1": 200], cpuPercent: [("bench clients", 14.2), ("broker-1", 11), ("controller", 0.6)])
        report.delivered = 24_000
        report.latency = LatencyDistribution([6_438_000])
        report.failover = .init(broker: "broker-2", resumed: LatencyDistribution([494_839_000]), notRecovered: 0)
        report.migrationPaths = ["broker-1→broker-3": 41, "broker-2→broker-3": 19]
        report.rebalance = .init(migrations: 60, balancedAfter: .milliseconds(1250))
        let processors = ProcessInfo.processInfo.activeProcessorCount
        #expect(
            report.description.split(separator: "\n", omittingEmptySubsequences: false) == [
                "",
                "published 120 events (0 publish calls failed and were not acknowledged)",
                "delivered 24000 of 24000 expected notifications; lost 0; out of order 0",
                "duplicates dropped by the client library: 1872",
                "publish→notify latency: p50 6.438 ms, p90 6.438 ms, p99 6.438 ms, p99.9 6.438 ms, max 6.438 ms (1 samples)",
                "clients per broker at the end: broker-1 200",
                "CPU while publishing (100% = one core; the machine has \(processors)): bench clients 14%, broker-1 11%, controller 1%",
                "failover: 1 clients of broker-2 reconnected to survivors; time from SIGKILL to resumed: p50 494.839 ms, p90 494.839 ms, p99 494.839 ms, p99.9 494.839 ms, max 494.839 ms (1 samples)",
                "migrations by path: broker-1→broker-3: 41; broker-2→broker-3: 19",
                "rebalance: 60 clients migrated; balanced (every broker within 10% of the mean) 1.25 s after the broker was added",
            ])
        #expect(NetworkReport.isBalanced(["a": 100, "b": 91], brokers: 2))
        #expect(!NetworkReport.isBalanced(["a": 70, "b": 70, "c": 60], brokers: 3))
        #expect(!NetworkReport.isBalanced(["a": 100], brokers: 2))
    }

    @Test func framesAreScannedInPlace() {
        let frame = #"{"type":"notify","subscription":"s-7","seq":42,"events":[{"description":"t123456789","kind":"x"}]}"#
        #expect(FrameScan.sentNanos(frame) == 123_456_789)
        #expect(FrameScan.number(after: Array(#""seq":"#.utf8), in: frame.utf8) == 42)
        #expect(FrameScan.field(frame, "subscription") == "s-7")
        #expect(FrameScan.field(frame, "seq") == "42")
        #expect(FrameScan.sentNanos(#"{"description":"tx"}"#) == nil)
        #expect(FrameScan.number(after: Array("missing".utf8), in: frame.utf8) == nil)
    }
}
