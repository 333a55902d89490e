import AsyncHTTPClient
import Foundation
import Testing
import TocsinClient
import TocsinCore
import TocsinTesting

/// `GET /metrics` of a real `tocsin serve`, which bootstraps swift-metrics with the Prometheus
/// backend: the names docs/operations.md lists are there, and count what happened.
@Suite(.timeLimit(.minutes(1)))
struct MetricsTests {
    @Test func theServerExportsWhatHappenedInPrometheusText() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let server = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "0", "--data-dir", directory])
        defer { server.kill(SIGKILL) }
        let base = "http://127.0.0.1:\(server.port)"
        let events = (1...3).map { MultiProcess.CrashRecoveryTests.event($0, kind: "fire") }
        _ = try await HTTPCall.call(.POST, base + "/v1/streams/emergencies/events", body: .array(events))
        let rejected = try await HTTPCall.send(.POST, base + "/v1/streams/emergencies/events", rawBody: #"{"kind": 7}"#)
        #expect(rejected.status == 400 || rejected.status == 422, "a schema violation: \(rejected.body)")

        let text = try await Self.metrics(base)
        func value(_ name: String) -> Double? { Self.value(name, in: text) }
        #expect(value("tocsin_published_events_total") == 3)
        #expect(value("tocsin_publish_rejected_total") == 1)
        #expect((value("tocsin_store_commits_total") ?? 0) >= 1)
        for name in [
            "tocsin_publish_duplicates_total", "tocsin_sessions_opened_total", "tocsin_sessions_closed_total",
            "tocsin_slow_consumer_disconnects_total", "tocsin_protocol_errors_total", "tocsin_notifications_sent_total",
            "tocsin_event_loop_stalls_total", "tocsin_store_full_rejections_total", "tocsin_store_slow_commits_total",
        ] {
            #expect(value(name) != nil, "\(name) is exported")
        }
        // The commits' durations, in the documented buckets.
        #expect((value("tocsin_store_commit_seconds_count") ?? 0) >= 1)
        #expect(text.contains(#"tocsin_store_commit_seconds_bucket{le="0.0005"}"#))
        #expect(text.contains(#"tocsin_store_commit_seconds_bucket{le="5.0"}"#))
        // Measured from the start: the example data's pages; no limit set.
        try await waitUntil("the store's size is measured") {
            guard let text = try? await Self.metrics(base) else { return false }
            return (Self.value("tocsin_store_used_bytes", in: text) ?? 0) > 0
        }
        #expect(Self.value("tocsin_store_max_bytes", in: try await Self.metrics(base)) == 0)
        // The watch probes each loop at start: the histogram has samples, in the documented buckets.
        #expect(text.contains(#"tocsin_event_loop_delay_seconds_bucket{le="0.001"}"#))
        #expect(text.contains(#"tocsin_event_loop_delay_seconds_bucket{le="5.0"}"#))
        #expect((value("tocsin_event_loop_delay_seconds_count") ?? 0) >= 1)
    }

    /// `GET base/metrics`, checked to be Prometheus text.
    static func metrics(_ base: String) async throws -> String {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/metrics"), timeout: .seconds(10))
        #expect(response.status == .ok)
        #expect(response.headers["content-type"].first?.hasPrefix("text/plain; version=0.0.4") == true)
        return String(buffer: try await response.body.collect(upTo: 1 << 20))
    }

    /// The value of the sample `series value`, where `series` is a name with its labels as
    /// written (`tocsin_controller_brokers{state="active"}`).
    static func value(_ series: String, in text: String) -> Double? {
        text.split(separator: "\n").lazy.compactMap { line -> Double? in
            let parts = line.split(separator: " ")
            return parts.count == 2 && parts[0] == series ? Double(parts[1]) : nil
        }.first
    }
}
