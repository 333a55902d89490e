import Foundation
import Logging
import Testing
import TocsinBroker
import TocsinClient
import TocsinController
import TocsinCore
import TocsinDev
import TocsinHTTP
import TocsinTesting

/// TLS on the broker's and the controller's listeners, in this process: clients verify the
/// certificate (a client that does not trust it gets a sentence, not a hang), a peer that never
/// handshakes is closed, and a reload swaps the certificate for new connections only when the
/// new files work.
@Suite(.timeLimit(.minutes(2)))
struct TLSTests {
    static let logger: Logger = {
        var logger = Logger(label: "tls-test")
        logger.logLevel = .critical
        return logger
    }()

    /// `GET url` over a client of its own (so each call is a new connection), verified against `trust`.
    static func get(_ url: String, trusting trust: TLSTrust) async throws -> JSONValue {
        let client = HTTPCall.makeClient(trust: trust)
        let result: Result<JSONValue, any Error>
        do {
            result = .success(try await HTTPCall.call(.GET, url, timeout: .seconds(10), using: client))
        } catch {
            result = .failure(error)
        }
        try? await client.shutdown()
        return try result.get()
    }

    /// The transport failure `body` throws, or nil if it succeeds or throws something else.
    static func failure(_ body: () async throws -> Void) async -> TransportFailure? {
        do {
            try await body()
            return nil
        } catch {
            return error as? TransportFailure
        }
    }

    /// A copy of `pair` at paths of its own, which a test may overwrite.
    static func livePair(_ pair: (certificate: String, key: String), in directory: String) throws -> (certificate: String, key: String) {
        let live = (certificate: directory + "/live.pem", key: directory + "/live-key.pem")
        try replace(live, with: pair)
        return live
    }

    static func replace(_ live: (certificate: String, key: String), with pair: (certificate: String, key: String)) throws {
        for (from, to) in [(pair.certificate, live.certificate), (pair.key, live.key)] {
            try? FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
    }

    @Test func aBrokerServesHTTPSAndWSSThatOnlyClientsTrustingItsCAAccept() async throws {
        let ca = try TestCertificates()
        defer { ca.remove() }
        let trusted = try TLSTrust(caFile: ca.caCertificate)
        let source = try TLSCertificateSource(certificatePath: ca.certificate, keyPath: ca.key, logger: Self.logger)
        try await TestBroker.with({ $0.tls = source }) { broker in
            let https = "https://127.0.0.1:\(broker.port)"
            let streams = try await Self.get(https + "/v1/streams", trusting: trusted)
            #expect(streams["streams"] != nil)

            // The system's CAs do not include the test CA: refused at once, in words.
            let refused = await Self.failure { _ = try await Self.get(https + "/v1/streams", trusting: .system) }
            #expect(refused?.kind == .untrusted)
            #expect(refused?.description.hasPrefix("the certificate of \(https) is not trusted: ") == true, "\(String(describing: refused))")

            // The cluster view advertises https and wss.
            let view = try ClusterView(json: try await Self.get(https + "/v1/cluster", trusting: trusted))
            #expect(view.brokers.first?.httpURL == https)
            #expect(view.brokers.first?.webSocketURL == "wss://127.0.0.1:\(broker.port)/v1/ws")

            // WebSocket over TLS, by a name the certificate covers.
            let wss = "wss://localhost:\(broker.port)/v1/ws"
            let welcome = try await Connection.run(url: wss, logger: Self.logger, trust: trusted) { try await $0.hello(client: "tls-client") }
            #expect(welcome.client == "tls-client")
            let untrusted = await Self.failure {
                _ = try await Connection.run(url: wss, logger: Self.logger) { try await $0.hello(client: "tls-client") }
            }
            #expect(untrusted?.kind == .untrusted)
            #expect(untrusted?.description.hasPrefix("the certificate of wss://localhost:\(broker.port) is not trusted: ") == true,
                "\(String(describing: untrusted))")
        }
    }

    @Test func aControllerServesHTTPSAndBrokersRegisterOnlyWhenTheyTrustIt() async throws {
        let ca = try TestCertificates()
        defer { ca.remove() }
        let trusted = try TLSTrust(caFile: ca.caCertificate)
        let source = try TLSCertificateSource(certificatePath: ca.certificate, keyPath: ca.key, logger: Self.logger)
        try await TestController.with({ $0.tls = source }) { controller in
            let url = "https://127.0.0.1:\(controller.port)"
            let client = ControllerClient(urls: [url], trust: trusted)
            let view = try await client.cluster()
            #expect(view.controller == url, "a TLS controller advertises https")
            try await client.shutdown()

            let stranger = ControllerClient(urls: [url])
            let refused = await Self.failure { _ = try await stranger.cluster() }
            try await stranger.shutdown()
            #expect(refused?.kind == .untrusted)
        }
    }

    @Test func aPeerThatNeverHandshakesIsClosedAtTheHeadDeadline() async throws {
        let ca = try TestCertificates()
        defer { ca.remove() }
        let source = try TLSCertificateSource(certificatePath: ca.certificate, keyPath: ca.key, logger: Self.logger)
        try await TestBroker.with({
            $0.tls = source
            $0.http.headTimeout = .milliseconds(300)
        }) { broker in
            let silent = try RawConnection(port: broker.port)
            let (bytes, closed) = await silent.readUntilClosed(timeout: .seconds(30))
            #expect(closed, "a silent TCP peer of a TLS listener is closed")
            #expect(bytes.isEmpty)

            // One that sends half a ClientHello and stalls, too.
            let halfway = try RawConnection(port: broker.port)
            try halfway.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            let (_, closedHalfway) = await halfway.readUntilClosed(timeout: .seconds(30))
            #expect(closedHalfway)
        }
    }

    @Test func aReloadServesTheNewCertificateToNewConnectionsAndABadOneKeepsTheOld() async throws {
        let first = try TestCertificates()
        let second = try TestCertificates()
        defer {
            first.remove()
            second.remove()
        }
        let trustFirst = try TLSTrust(caFile: first.caCertificate)
        let trustSecond = try TLSTrust(caFile: second.caCertificate)
        let live = try Self.livePair((first.certificate, first.key), in: first.directory)
        let source = try TLSCertificateSource(certificatePath: live.certificate, keyPath: live.key, logger: Self.logger)
        try await TestBroker.with({ $0.tls = source }) { broker in
            let url = "https://127.0.0.1:\(broker.port)/healthz"
            _ = try await Self.get(url, trusting: trustFirst)
            #expect(await Self.failure { _ = try await Self.get(url, trusting: trustSecond) }?.kind == .untrusted)

            // The files now hold a certificate of the second CA.
            try Self.replace(live, with: (second.certificate, second.key))
            #expect(source.reload())
            _ = try await Self.get(url, trusting: trustSecond)
            #expect(await Self.failure { _ = try await Self.get(url, trusting: trustFirst) }?.kind == .untrusted)

            // A broken certificate file: the reload fails and the second certificate stays.
            try "not a certificate".write(toFile: live.certificate, atomically: true, encoding: .utf8)
            #expect(!source.reload())
            _ = try await Self.get(url, trusting: trustSecond)

            // A key that does not go with the certificate: the same.
            try Self.replace(live, with: (first.certificate, second.key))
            #expect(!source.reload())
            _ = try await Self.get(url, trusting: trustSecond)
        }
    }

    @Test func unusableFilesAreRefusedAtStartInWords() throws {
        let first = try TestCertificates()
        let second = try TestCertificates()
        defer {
            first.remove()
            second.remove()
        }
        #expect {
            _ = try TLSCertificateSource(certificatePath: first.certificate, keyPath: second.key, logger: Self.logger)
        } throws: { error in
            "\(error)".hasPrefix("cannot use the TLS certificate \(first.certificate) with the key \(second.key): ")
        }
        #expect {
            _ = try TLSCertificateSource(certificatePath: first.directory + "/missing.pem", keyPath: first.key, logger: Self.logger)
        } throws: { error in
            "\(error)".contains("the certificate file cannot be read")
        }
        #expect {
            _ = try TLSTrust(caFile: first.directory + "/missing.pem")
        } throws: { error in
            "\(error)".hasPrefix("cannot read the CA file \(first.directory)/missing.pem")
        }
    }

    @Test func aWSSURLWithAnIPAddressIsRefusedInWords() async throws {
        let failure = await Self.failure {
            _ = try await Connection.run(url: "wss://127.0.0.1:1/v1/ws", logger: Self.logger) { try await $0.hello(client: "x") }
        }
        #expect(failure?.kind == .badURL, "\(String(describing: failure))")
    }
}
