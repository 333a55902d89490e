import ArgumentParser
import Logging
import OTel
import ServiceLifecycle
import TocsinCore
import Tracing

/// Spans exported over OTLP/HTTP (swift-otel) when an endpoint is given; nothing otherwise.
/// The standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
/// `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_SERVICE_NAME`, …) are honoured too.
struct TracingOptions: ParsableArguments {
    @Option(
        name: .customLong("otlp-endpoint"),
        help: "Export spans over OTLP/HTTP to this collector (http(s)://host:4318; /v1/traces is added). Default: env OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; without any, no spans are made.")
    var endpoint: String?

    @Option(name: .customLong("otlp-protocol"), help: "http/protobuf (the default) or http/json (env OTEL_EXPORTER_OTLP_PROTOCOL).")
    var otlpProtocol: String?

    @Option(
        name: .customLong("trace-sample-ratio"),
        help: "Share of publishes that start a trace (0 to 1; a publisher's sampled traceparent is always followed). Default 1.")
    var sampleRatio: Double = 1

    @Option(
        name: .customLong("trace-deliveries-per-event"),
        help: "Live notifications of one traced event that get a deliver span on a broker (0: every one; replays always do). Default 10.")
    var deliveriesPerEvent = 10

    mutating func validate() throws {
        guard sampleRatio.isFinite, (0...1).contains(sampleRatio) else {
            throw ValidationError("--trace-sample-ratio must be between 0 and 1, got \(sampleRatio)")
        }
        if let endpoint {
            guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://"), endpoint.count > 8 else {
                throw ValidationError("--otlp-endpoint must be an http:// or https:// URL, got '\(endpoint)'")
            }
        }
        guard (0...10_000_000).contains(deliveriesPerEvent) else {
            throw ValidationError("--trace-deliveries-per-event must be between 0 (every one) and 10000000, got \(deliveriesPerEvent)")
        }
        if let otlpProtocol, !["http/protobuf", "http/json"].contains(otlpProtocol) {
            throw ValidationError("--otlp-protocol must be http/protobuf or http/json, got '\(otlpProtocol)'")
        }
    }

    /// The same options for a broker this process starts (`tocsin dev`, `tocsin supervise`).
    var arguments: [String] {
        (endpoint.map { ["--otlp-endpoint", $0] } ?? []) + (otlpProtocol.map { ["--otlp-protocol", $0] } ?? [])
            + (sampleRatio == 1 ? [] : ["--trace-sample-ratio", "\(sampleRatio)"])
            + (deliveriesPerEvent == 10 ? [] : ["--trace-deliveries-per-event", "\(deliveriesPerEvent)"])
    }

    /// Whether spans are exported: an endpoint from the flag or the environment.
    var enabled: Bool {
        endpoint != nil || Environment.get("OTEL_EXPORTER_OTLP_ENDPOINT") != nil
            || Environment.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != nil
    }

    /// The tracer and the service that batches and exports its spans (run it in the process's
    /// service group, before the services that make spans, so it stops after them and flushes),
    /// or nil when no endpoint is configured.
    func backend(service: String, instance: String, logger: Logger) throws -> (tracer: any Tracer, service: any Service)? {
        guard enabled else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = service
        configuration.resourceAttributes["service.instance.id"] = instance
        configuration.resourceAttributes["service.version"] = TocsinVersion.current
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.diagnosticLogger = .custom(logger)
        configuration.traces.exporter = .otlp
        configuration.traces.sampler = .parentBasedTraceIDRatio(ratio: sampleRatio) ?? .parentBasedAlwaysOn
        if let endpoint {
            configuration.traces.otlpExporter.endpoint = endpoint.hasSuffix("/") ? endpoint + "v1/traces" : endpoint + "/v1/traces"
        }
        if let otlpProtocol {
            configuration.traces.otlpExporter.protocol = otlpProtocol == "http/json" ? .httpJSON : .httpProtobuf
        }
        do {
            let (tracer, exporter) = try OTel.makeTracingBackend(configuration: configuration)
            logger.info(
                "exporting spans over OTLP",
                metadata: ["endpoint": "\(endpoint ?? "from OTEL_EXPORTER_OTLP_*")", "sampleRatio": "\(sampleRatio)"])
            return (tracer, exporter)
        } catch {
            throw ValidationError("tracing: \(error) (only OTLP over HTTP is built in: http/protobuf or http/json)")
        }
    }
}
