import Foundation
import Hummingbird
import Logging
import Synchronization
public import TocsinCore

/// A span collector for tests: takes OTLP/HTTP JSON (`POST /v1/traces`, what `--otlp-protocol
/// http/json` sends) on a port of its own and keeps every span, for a test to wait on.
public final class OTLPReceiver: Sendable {
    public struct Span: Sendable, CustomStringConvertible {
        public var name: String
        /// Lowercase hex, as in a traceparent.
        public var traceID: String
        public var spanID: String
        /// nil for a root span.
        public var parentSpanID: String?
        /// OTLP's numbering: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
        public var kind: Int
        public var attributes: [String: JSONValue]
        /// The exporting process's `service.instance.id`.
        public var instance: String?
        /// 2: error.
        public var statusCode: Int

        public var description: String {
            "\(name) [\(instance ?? "?")] \(traceID)/\(spanID) parent \(parentSpanID ?? "-") \(attributes)"
        }
    }

    private final class Log: Sendable {
        let spans = Mutex<[Span]>([])
    }

    private let log: Log
    private let task: Task<Void, Never>
    /// The collector's base URL, for `--otlp-endpoint`.
    public let url: String

    private init(log: Log, task: Task<Void, Never>, url: String) {
        self.log = log
        self.task = task
        self.url = url
    }

    /// Listens on 127.0.0.1, port 0.
    public static func start() async throws -> OTLPReceiver {
        let log = Log()
        let router = Router()
        router.post("/v1/traces") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            let json = try JSONValue.parse(Array(body.readableBytesView))
            log.spans.withLock { $0 += Self.spans(in: json) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        let port = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in port.continuation.yield(channel.localAddress?.port ?? 0) },
            logger: { var l = Logger(label: "otlp-receiver"); l.logLevel = .critical; return l }())
        let task = Task { _ = try? await app.runService(gracefulShutdownSignals: []) }
        var ports = port.stream.makeAsyncIterator()
        guard let bound = await ports.next(), bound > 0 else {
            task.cancel()
            throw TocsinError(.internalError, "the OTLP receiver did not start")
        }
        return OTLPReceiver(log: log, task: task, url: "http://127.0.0.1:\(bound)")
    }

    public func stop() { task.cancel() }

    public var received: [Span] { log.spans.withLock { $0 } }

    /// The spans of an OTLP `ExportTraceServiceRequest` in its JSON encoding. Ids may be hex (the
    /// OTLP/JSON rule) or base64 (protobuf's JSON mapping, which some exporters send): read as hex.
    static func spans(in request: JSONValue) -> [Span] {
        var out: [Span] = []
        for resource in request["resourceSpans"]?.arrayValue ?? [] {
            let instance = attributes(resource["resource"]?["attributes"])["service.instance.id"]?.stringValue
            for scope in resource["scopeSpans"]?.arrayValue ?? [] {
                for span in scope["spans"]?.arrayValue ?? [] {
                    let parent = hex(span["parentSpanId"]?.stringValue ?? "", bytes: 8)
                    out.append(
                        Span(
                            name: span["name"]?.stringValue ?? "", traceID: hex(span["traceId"]?.stringValue ?? "", bytes: 16),
                            spanID: hex(span["spanId"]?.stringValue ?? "", bytes: 8), parentSpanID: parent.isEmpty ? nil : parent,
                            kind: Int(span["kind"]?.intValue ?? 0), attributes: attributes(span["attributes"]), instance: instance,
                            statusCode: Int(span["status"]?["code"]?.intValue ?? 0)))
                }
            }
        }
        return out
    }

    private static func attributes(_ list: JSONValue?) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for attribute in list?.arrayValue ?? [] {
            guard let key = attribute["key"]?.stringValue, let value = attribute["value"] else { continue }
            if let s = value["stringValue"]?.stringValue {
                out[key] = .string(s)
            } else if let i = value["intValue"] {
                // int64 is a string in OTLP/JSON.
                out[key] = i.stringValue.flatMap { Int64($0) }.map(JSONValue.int) ?? i
            } else if let b = value["boolValue"] {
                out[key] = b
            } else if let d = value["doubleValue"] {
                out[key] = d
            }
        }
        return out
    }

    private static func hex(_ text: String, bytes: Int) -> String {
        if text.utf8.count == bytes * 2, text.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) { return text }
        guard let data = Data(base64Encoded: text), data.count == bytes else { return text }
        return data.map { String(format: "%02x", $0) }.joined()
    }
}
