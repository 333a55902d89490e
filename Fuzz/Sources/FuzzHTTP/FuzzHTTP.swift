// libFuzzer target: the broker's HTTP request path (routing, query and body decoding, the API's
// answers and errors), through `BrokerHTTPResponder` on one broker on an SQLite store in a
// temporary directory made once per process. The broker keeps its state across inputs (streams
// and channels defined, events published), as a long-running broker would.
//
// Input: a request in HTTP/1 shape, "\n" line ends:
//     METHOD /path?query
//     Name: value            (any number of header lines)
//                            (an empty line)
//     body
// Inputs that HTTP/1 parsing would refuse before routing (a bad method token, spaces or control
// bytes in the target or in a header) are skipped.
// Properties: never crashes; never answers 500 (an error the API did not map: a bug); every
// error body is the API's `{"error": {"code", "message"}}`.
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import ServiceLifecycle
import TocsinBroker
import TocsinCore
import TocsinStore

/// Blocks the calling thread (libFuzzer's, never one of the concurrency pool's) until `body` returns.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = Box<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}

final class Box<T>: @unchecked Sendable {  // written before the semaphore's signal, read after its wait
    var value: T?
}

struct Fixture: Sendable {
    let responder: BrokerHTTPResponder
    let logger: Logger
    /// The connection every request "comes on" (one for the process: the HTTP routes do not use it).
    let channel = NIOAsyncTestingChannel()
}

let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tocsin-fuzz-http-\(getpid())").path
let fixture: Fixture = blocking {
    try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: directory) }
    var logger = Logger(label: "fuzz-http")
    logger.logLevel = .critical
    let store = try! await StoreConfiguration.sqlite(.init(path: directory + "/tocsin.sqlite", synchronousFull: false)).open(logger: logger)
    var configuration = BrokerConfiguration()
    configuration.seedExample = true
    try! await ExampleData.seed(store)
    let broker = try! await Broker(configuration: configuration, store: store, logger: logger)
    // The broker's services (tails, retention, the store's checkpoints) run as in a served broker.
    let services = ServiceGroup(configuration: .init(services: broker.services, logger: logger))
    Task { try await services.run() }
    return Fixture(responder: BrokerHTTPResponder(broker: broker), logger: logger)
}

/// Splits the input into a request, or nil when HTTP/1 parsing would refuse it.
func request(from bytes: UnsafeBufferPointer<UInt8>) -> Request? {
    let newline = UInt8(ascii: "\n")
    var lines: [Slice<UnsafeBufferPointer<UInt8>>] = []
    var start = bytes.startIndex
    var bodyStart = bytes.endIndex
    while let end = bytes[start...].firstIndex(of: newline) {
        if end == start, !lines.isEmpty {  // the empty line: the body follows
            bodyStart = end + 1
            break
        }
        lines.append(bytes[start..<end])
        start = end + 1
    }
    if bodyStart == bytes.endIndex, start < bytes.endIndex { lines.append(bytes[start...]) }
    guard let first = lines.first, let space = first.firstIndex(of: UInt8(ascii: " ")) else { return nil }
    guard let method = HTTPRequest.Method(String(decoding: first[..<space], as: UTF8.self)) else { return nil }
    let target = first[(space + 1)...]
    guard !target.isEmpty, target.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
    var fields = HTTPFields()
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")),
            let name = HTTPField.Name(String(decoding: line[..<colon], as: UTF8.self))
        else { return nil }
        let value = line[(colon + 1)...].drop { $0 == UInt8(ascii: " ") }
        guard value.allSatisfy({ $0 >= 0x20 && $0 != 0x7f || $0 == 0x09 }) else { return nil }
        fields.append(HTTPField(name: name, value: String(decoding: value, as: UTF8.self)))
    }
    let body = ByteBuffer(bytes: bytes[bodyStart...])
    if fields[.contentLength] != nil || fields[.transferEncoding] != nil { return nil }  // the parser's job
    if body.readableBytes > 0 { fields[.contentLength] = String(body.readableBytes) }
    let head = HTTPRequest(
        method: method, scheme: "http", authority: "localhost", path: String(decoding: target, as: UTF8.self), headerFields: fields)
    return Request(head: head, body: RequestBody(buffer: body))
}

/// Collects a response body (a class: the body writes into the writer it is handed).
final class Collector: ResponseBodyWriter {
    var bytes: [UInt8] = []
    func write(_ buffer: ByteBuffer) async throws { bytes += buffer.readableBytesView }
    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

func fuzzHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let request = request(from: UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    let described = "\(request.method) \(request.uri)"
    let (status, body): (HTTPResponse.Status, [UInt8]) = blocking {
        do {
            let response = try await fixture.responder.respond(to: request, channel: fixture.channel, logger: fixture.logger)
            let collector = Collector()
            try await response.body.write(collector)
            return (response.status, collector.bytes)
        } catch let error as any HTTPResponseError {
            // Hummingbird's own answers (no route: 404; a method not allowed: 405): the server writes them.
            return (error.status, [])
        } catch {
            fatalError("\(described) threw \(type(of: error)) \(error), which the server would answer with 500")
        }
    }
    precondition(status != .internalServerError, "\(described) answered 500: \(String(decoding: body, as: UTF8.self).prefix(300))")
    if status.code >= 400, !body.isEmpty {
        guard case .object(let o)? = try? JSONValue.parse(body), case .object(let e)? = o["error"], e["code"]?.stringValue != nil,
            e["message"]?.stringValue != nil
        else {
            fatalError("\(described) answered \(status.code) with a body that is not an API error: \(String(decoding: body, as: UTF8.self).prefix(300))")
        }
    }
    return 0
}
