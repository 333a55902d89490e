package import Hummingbird
package import Prometheus
package import TocsinCore

extension GuardedRoutes {
    /// `GET /metrics`: `registry` in the Prometheus text format (broker and controller alike),
    /// for tokens with the `metrics` scope.
    package func addMetricsRoute(_ registry: PrometheusCollectorRegistry) {
        on(.get, "/metrics", .metrics) { _, _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
    }
}
