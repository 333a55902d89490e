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

    @Test func aBrokerServesHTTPSAndWSSThatOnlyClientsTrustingItsCAAccept() async throws {
        let ca = try TestCertificates()
        defer { ca.remove() }
        let trusted = try TLSTrust(caFile: ca.caCertificate)
        let source = try TLSCertificateSource(certificatePath: ca.certificate, keyPath: ca.key, logger: Self.logger)
        try await TestBroker.with({ $0.tls = source }) { broker in
            let https = "https://127.0.0.1:\(broker.port)"
            let streams = try await getOnNewConnection(https + "/v1/streams", trusting: trusted)
            #expect(streams["streams"] != nil)

            // The system's CAs do not include the test CA: refused at once, in words.
            let refused = await transportFailure { _ = try await getOnNewConnection(https + "/v1/streams", trusting: .system) }
            #expect(refused?.kind == .untrusted)
            #expect(refused?.description.hasPrefix("the certificate of \(https) is not trusted: ") == true, "\(String(describing: refused))")

            // The cluster view advertises https and wss.
            let view = try ClusterView(json: try await getOnNewConnection(https + "/v1/cluster", trusting: trusted))
            #expect(view.brokers.first?.httpURL == https)
            #expect(view.brokers.first?.webSocketURL == "wss://127.0.0.1:\(broker.port)/v1/ws")

            // WebSocket over TLS, by a name the certificate covers.
            let wss = "wss://localhost:\(broker.port)/v1/ws"
            let welcome = try await Connection.run(url: wss, logger: Self.logger, trust: trusted) { try await $0.hello(client: "tls-client") }
            #expect(welcome.client == "tls-client")
            let untrusted = await transportFailure {
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
            let refused = await transportFailure { _ = try await stranger.cluster() }
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
        let live = (certificate: first.directory + "/live.pem", key: first.directory + "/live-key.pem")
        try TestCertificates.install((first.certificate, first.key), at: live)
        let source = try TLSCertificateSource(certificatePath: live.certificate, keyPath: live.key, logger: Self.logger)
        try await TestBroker.with({ $0.tls = source }) { broker in
            let url = "https://127.0.0.1:\(broker.port)/healthz"
            _ = try await getOnNewConnection(url, trusting: trustFirst)
            #expect(await transportFailure { _ = try await getOnNewConnection(url, trusting: trustSecond) }?.kind == .untrusted)

            // The files now hold a certificate of the second CA.
            try TestCertificates.install((second.certificate, second.key), at: live)
            #expect(source.reload())
            _ = try await getOnNewConnection(url, trusting: trustSecond)
            #expect(await transportFailure { _ = try await getOnNewConnection(url, trusting: trustFirst) }?.kind == .untrusted)

            // A broken certificate file: the reload fails and the second certificate stays.
            try "not a certificate".write(toFile: live.certificate, atomically: true, encoding: .utf8)
            #expect(!source.reload())
            _ = try await getOnNewConnection(url, trusting: trustSecond)

            // A key that does not go with the certificate: the same.
            try TestCertificates.install((first.certificate, second.key), at: live)
            #expect(!source.reload())
            _ = try await getOnNewConnection(url, trusting: trustSecond)
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
        let failure = await transportFailure {
            _ = try await Connection.run(url: "wss://127.0.0.1:1/v1/ws", logger: Self.logger) { try await $0.hello(client: "x") }
        }
        #expect(failure?.kind == .badURL, "\(String(describing: failure))")
    }
}
