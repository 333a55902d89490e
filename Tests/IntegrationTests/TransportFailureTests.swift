import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Testing
import TocsinClient
import TocsinCore

/// `TransportFailure.from`: transport errors become one sentence each; the protocol's own errors
/// and cancellations pass through untouched.
@Suite(.timeLimit(.minutes(1)))
struct TransportFailureTests {
    @Test func refusedReadsLikeTheExample() throws {
        let failure = try #require(
            TransportFailure.from(IOError(errnoCode: ECONNREFUSED, reason: "connect"), url: "http://127.0.0.1:7400/v1/cluster"))
        #expect(failure.kind == .refused)
        #expect(failure.description == "cannot reach a broker at http://127.0.0.1:7400 (connection refused); is `tocsin serve` running?")
    }

    @Test func eachKindOfFailureHasItsSentence() throws {
        let https = try #require(TransportFailure.from(HTTPClientError.connectTimeout, url: "https://node.example:7400/v1/cluster"))
        #expect(https.kind == .timedOut)
        #expect(https.description.contains("does it serve https?"), "\(https)")
        let slow = try #require(
            TransportFailure.from(HTTPClientError.deadlineExceeded, url: "http://127.0.0.1:7400/v1/streams/s/events", timeout: .seconds(2)))
        #expect(
            slow.description
                == "a broker at http://127.0.0.1:7400 accepted the connection but did not answer within 2 s; it may be overloaded or stuck")
        let bad = try #require(TransportFailure.from(HTTPClientError.emptyScheme, url: "localhost:7400/v1/cluster"))
        #expect(bad.kind == .badURL)
        #expect(bad.description.hasPrefix("'localhost:7400' is not a URL Tocsin can use"), "\(bad)")
        let reset = try #require(TransportFailure.from(IOError(errnoCode: ECONNRESET, reason: "read"), url: "http://127.0.0.1:7400"))
        let closed = try #require(TransportFailure.from(HTTPClientError.remoteConnectionClosed, url: "http://127.0.0.1:7400"))
        #expect(reset == closed, "the same to the user, so said once")
    }

    @Test func protocolErrorsAndCancellationAreNotTransportFailures() {
        #expect(TransportFailure.from(TocsinError(.unknownStream, "no stream 's'"), url: "http://127.0.0.1:7400") == nil)
        #expect(TransportFailure.from(CancellationError(), url: "http://127.0.0.1:7400") == nil)
        #expect(TransportFailure.from(HTTPClientError.cancelled, url: "http://127.0.0.1:7400") == nil)
    }

    @Test func aWebSocketToAPortNothingListensOnIsRefusedInWords() async throws {
        let port = try CommandLineTests.deadPort()
        do {
            try await Connection.run(url: "ws://127.0.0.1:\(port)/v1/ws", logger: Logger(label: "test")) { _ in }
            Issue.record("connected to a port nothing listens on")
        } catch let failure as TransportFailure {
            #expect(failure.kind == .refused)
            #expect(
                failure.description == "cannot reach a broker at ws://127.0.0.1:\(port) (connection refused); is `tocsin serve` running?")
        }
    }

    @Test func anUnknownHostIsNamed() async throws {
        do {
            _ = try await HTTPCall.send(.GET, "http://no-such-host.invalid:7400/v1/cluster", timeout: .seconds(10))
            Issue.record("an .invalid host answered")
        } catch let failure as TransportFailure {
            #expect(failure.kind == .hostNotFound)
            #expect(failure.description.contains("(host 'no-such-host.invalid' not found)"), "\(failure)")
        }
    }
}
