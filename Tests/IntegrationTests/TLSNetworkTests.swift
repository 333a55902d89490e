import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinStore
import TocsinTesting

extension MultiProcess {
/// TLS end to end between real processes: a `tocsin controller` and a `tocsin broker` serving
/// HTTPS/WSS with a certificate of a throwaway CA, the broker verifying the controller against
/// that CA, and subscribers of the client library that trust it (or not).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct TLSNetworkTests {
    static let logger: Logger = {
        var logger = Logger(label: "tls-network-test")
        logger.logLevel = .critical
        return logger
    }()

    static func event(kind: String, description: String) -> JSONValue {
        [
            "kind": .string(kind), "severity": 3, "location": ["lat": 52.0, "lon": 4.0], "area": "Delft",
            "description": .string(description), "time": .string(TimeFormat.format(WallClock.nowMillis())),
        ]
    }

    /// What a subscriber reported: its connections, the errors it gave up a connection for, and
    /// the descriptions of the events it received.
    final class Seen: Sendable {
        let connected = Mutex<[String]>([])
        let errors = Mutex<[String]>([])
        let received = Mutex<[String]>([])

        func follow(_ subscriber: Subscriber) -> Task<Void, Never> {
            Task {
                for await event in subscriber.events() {
                    switch event {
                    case .connected(let broker, _): connected.withLock { $0.append(broker) }
                    case .disconnected(let error, _): errors.withLock { $0.append(error) }
                    case .notification(let n):
                        let descriptions = n.events.map { (try? JSONValue.parse($0.json))?["description"]?.stringValue ?? "?" }
                        received.withLock { $0 += descriptions }
                    default: break
                    }
                }
            }
        }
    }

    @Test func aClientVerifiesTheBrokerAndTheBrokerVerifiesTheController() async throws {
        let ca = try TestCertificates()
        defer { ca.remove() }
        var configuration = LocalNetwork.Configuration(directory: TemporaryDirectory.make())
        configuration.executable = ServerProcess.tocsinBinary
        configuration.brokers = 1
        // The WebSocket client needs a host name to verify a certificate against.
        configuration.host = "localhost"
        configuration.tls = .init(ca)
        configuration.brokerArguments = ["--no-fsync"]
        let network = try await LocalNetwork(configuration: configuration)
        defer { TemporaryDirectory.remove(configuration.directory) }
        do {
            let trust = try TLSTrust(caFile: ca.caCertificate)
            let controller = network.controllerURL
            #expect(controller.hasPrefix("https://localhost:"))

            // The broker registered over https, verifying the controller against the CA, and is
            // advertised with https and wss.
            let broker = try await waitForValue("the broker registered with the controller") { () async -> BrokerSummary? in
                let view = try? ClusterView(json: try await getOnNewConnection(controller + "/v1/cluster", trusting: trust))
                return view?.brokers.first
            }
            #expect(broker.httpURL.hasPrefix("https://localhost:"))
            #expect(broker.webSocketURL.hasPrefix("wss://localhost:"))

            // A subscriber trusting the CA finds the broker through the controller and receives over wss.
            var trusting = Subscriber.Configuration(seeds: [controller], client: "tls-trusting")
            trusting.trust = trust
            let seen = Seen()
            let following = seen.follow(
                Subscriber(configuration: trusting, requests: [SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": "fire"])],
                    logger: Self.logger))
            defer { following.cancel() }
            try await waitUntil("the trusting subscriber connected") { !seen.connected.withLock { $0.isEmpty } }
            let publisher = Publisher(seeds: [controller], trust: trust, logger: Self.logger)
            _ = try await publisher.publish(stream: "emergencies", events: [Self.event(kind: "fire", description: "over tls")])
            try await waitUntil("the event arrived over wss") { seen.received.withLock { $0 } == ["over tls"] }

            // One that trusts only the system's CAs is refused, in words, and never connects.
            let stranger = Seen()
            let refusing = stranger.follow(
                Subscriber(
                    configuration: .init(seeds: [controller], client: "tls-stranger"),
                    requests: [SubscriptionRequest(channel: "EmergenciesOfKind", params: ["kind": "fire"])], logger: Self.logger))
            defer { refusing.cancel() }
            let error = try await waitForValue("the stranger was refused") { stranger.errors.withLock { $0.first } }
            #expect(error.hasPrefix("the certificate of \(controller) is not trusted: "), "\(error)")
            #expect(stranger.connected.withLock { $0.isEmpty })
            // So is its publish.
            let publishFailure = await transportFailure {
                _ = try await Publisher(seeds: [controller], logger: Self.logger).publish(
                    stream: "emergencies", events: [Self.event(kind: "fire", description: "refused")])
            }
            #expect(publishFailure?.kind == .untrusted)
        } catch {
            await network.stop(signal: SIGKILL)
            throw error
        }
        await network.stop(signal: SIGKILL)
    }

    @Test func aBrokerRefusesAControllerWhoseCertificateItDoesNotTrust() async throws {
        let controllerCA = try TestCertificates()
        let otherCA = try TestCertificates()
        let directory = TemporaryDirectory.make()
        defer {
            controllerCA.remove()
            otherCA.remove()
            TemporaryDirectory.remove(directory)
        }
        let controller = try await ServerProcess(
            arguments: ["controller", "--insecure-no-auth", "--host", "localhost", "--port", "0", "--tls-cert", controllerCA.certificate, "--tls-key", controllerCA.key])
        let controllerURL = "https://localhost:\(controller.port)"
        let log = directory + "/broker.log"
        let broker = try await ServerProcess(
            arguments: [
                "broker", "--insecure-no-auth", "--controller", controllerURL, "--host", "localhost", "--port", "0", "--data-dir", directory, "--no-fsync",
                "--tls-ca", otherCA.caCertificate, "--log-level", "warning",
            ], stderrFile: log)
        defer {
            broker.kill()
            controller.kill()
        }
        // It says why, and keeps running (it retries with backoff) instead of trusting it.
        try await waitUntil("the broker logged the untrusted controller") {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("the certificate of \(controllerURL) is not trusted")
        }
        #expect(broker.isRunning)
        let view = try ClusterView(json: try await getOnNewConnection(controllerURL + "/v1/cluster", trusting: try TLSTrust(caFile: controllerCA.caCertificate)))
        #expect(view.brokers.isEmpty, "the broker did not register")
    }
}
}

/// The TLS flags of real `tocsin` processes: `tocsin serve` rereads its certificate on SIGHUP (new
/// connections get the new one, the process keeps running), and unusable flags end a start in words.
@Suite(.timeLimit(.minutes(2)))
struct TLSCommandLineTests {
    @Test func sighupMakesNewConnectionsGetTheNewCertificate() async throws {
        let first = try TestCertificates()
        let second = try TestCertificates()
        let directory = TemporaryDirectory.make()
        defer {
            first.remove()
            second.remove()
            TemporaryDirectory.remove(directory)
        }
        let live = (certificate: directory + "/cert.pem", key: directory + "/key.pem")
        try TestCertificates.install((first.certificate, first.key), at: live)
        let server = try await ServerProcess(
            arguments: ["serve", "--port", "0", "--data-dir", directory + "/data", "--empty", "--tls-cert", live.certificate, "--tls-key", live.key])
        defer { server.kill() }
        let url = "https://127.0.0.1:\(server.port)/healthz"
        let trustFirst = try TLSTrust(caFile: first.caCertificate)
        let trustSecond = try TLSTrust(caFile: second.caCertificate)
        _ = try await getOnNewConnection(url, trusting: trustFirst)

        try TestCertificates.install((second.certificate, second.key), at: live)
        server.signal(SIGHUP)
        try await waitUntil("a new connection gets the second certificate") {
            (try? await getOnNewConnection(url, trusting: trustSecond)) != nil
        }
        #expect(await transportFailure { _ = try await getOnNewConnection(url, trusting: trustFirst) }?.kind == .untrusted)

        // A broken file: the SIGHUP is logged as a failed reload, and the second certificate stays.
        try "garbage".write(toFile: live.certificate, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        _ = try await getOnNewConnection(url, trusting: trustSecond)
        #expect(server.isRunning)
    }

    @Test func unusableTLSFlagsEndTheStartInWords() throws {
        let certificates = try TestCertificates()
        let other = try TestCertificates()
        let directory = TemporaryDirectory.make()
        defer {
            certificates.remove()
            other.remove()
            TemporaryDirectory.remove(directory)
        }
        /// What the command printed when it failed (it must fail).
        func failure(_ arguments: [String]) -> String {
            do {
                _ = try ChildProcess.output(of: ServerProcess.tocsinBinary, arguments)
                return "it started"
            } catch {
                return "\(error)"
            }
        }
        let serve = ["serve", "--port", "0", "--data-dir", directory]
        #expect(failure(serve + ["--tls-cert", certificates.certificate]).contains("--tls-cert and --tls-key (or TOCSIN_TLS_CERT and TOCSIN_TLS_KEY) go together"))
        #expect(failure(serve + ["--tls-cert", certificates.certificate, "--tls-key", other.key]).contains(
            "cannot use the TLS certificate \(certificates.certificate) with the key \(other.key): "))
        #expect(failure(["controller", "--insecure-no-auth", "--port", "0", "--tls-cert", directory + "/missing.pem", "--tls-key", certificates.key]).contains(
            "the certificate file cannot be read"))
        #expect(failure(["broker", "--insecure-no-auth", "--port", "0", "--data-dir", directory, "--tls-ca", directory + "/missing.pem"]).contains(
            "--tls-ca (or TOCSIN_TLS_CA): cannot read the CA file"))
    }
}
