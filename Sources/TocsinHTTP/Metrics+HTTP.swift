package import Hummingbird
package import Prometheus

extension Router {
    /// `GET /metrics`: `registry` in the Prometheus text format (broker and controller alike).
    package func addMetricsRoute(_ registry: PrometheusCollectorRegistry) {
        get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
    }
}
