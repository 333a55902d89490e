import AsyncHTTPClient
import Foundation
import Logging
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinTesting

extension MultiProcess {
/// Spans from real broker processes, exported over OTLP/HTTP to a collector the test runs: a
/// publish in the caller's trace, its commit, and each delivery on every broker of a network,
/// live and replayed after a migration to another broker; an unsampled publish makes none.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct TracingTests {
    static let logger = Logger(label: "tracing-test")

    /// A caller's trace: trace id and its span id.
    struct Caller {
        var trace: String
        var span: String
        var sampled = true
        var traceparent: String { "00-\(trace)-\(span)-0\(sampled ? 1 : 0)" }
    }

    static func caller(_ n: Int, sampled: Bool = true) -> Caller {
        Caller(trace: String(repeating: "\(n)", count: 32), span: String(repeating: "a\(n)", count: 8), sampled: sampled)
    }

    static let event: JSONValue = [
        "kind": "traced", "severity": 3, "location": ["lat": 52.37, "lon": 4.89], "area": "ams", "time": "2026-12-07T00:00:00Z",
    ]

    static func publishOverHTTP(_ broker: LocalNetwork.Member, _ caller: Caller) async throws {
        var request = HTTPClientRequest(url: broker.httpURL + "/v1/streams/emergencies/events")
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "traceparent", value: caller.traceparent)
        request.body = .bytes(Array(event.serialized.utf8))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(response.status == .created)
    }

    @Test(arguments: NetworkTests.SharedStore.allCases)
    func spansFollowEachPublishToEveryDeliveryOnEveryBrokerAndAcrossAMigration(store: NetworkTests.SharedStore) async throws {
        let receiver = try await OTLPReceiver.start()
        defer { receiver.stop() }
        var configuration = LocalNetwork.Configuration(directory: TemporaryDirectory.make())
        let database = store == .postgres ? try await PostgresServer.database() : nil
        configuration.store = database?.url
        configuration.brokers = 2
        configuration.executable = ServerProcess.tocsinBinary
        configuration.brokerArguments = ["--no-fsync", "--otlp-endpoint", receiver.url, "--otlp-protocol", "http/json"]
        let network: LocalNetwork
        do {
            network = try await LocalNetwork(configuration: configuration)
        } catch {
            database?.destroy()
            throw error
        }
        let controller = ControllerClient(url: network.controllerURL)
        defer { Task { try? await controller.shutdown() } }
        do {
            try await run(network, controller, receiver)
        } catch {
            await NetworkTests.tearDown(network, database)
            throw error
        }
        await NetworkTests.tearDown(network, database)
    }

    static func deliveries(_ spans: [OTLPReceiver.Span], _ caller: Caller) -> [OTLPReceiver.Span] {
        spans.filter { $0.traceID == caller.trace && $0.name == "deliver EmergenciesOfKind" }
    }

    func run(_ network: LocalNetwork, _ controller: ControllerClient, _ receiver: OTLPReceiver) async throws {
        let (one, two) = (try #require(network.member("broker-1")), try #require(network.member("broker-2")))
        let (t1, t2, t3, t4) = (Self.caller(1), Self.caller(2, sampled: false), Self.caller(3), Self.caller(4))
        try await Connection.run(url: one.webSocketURL, logger: Self.logger) { a in
            let aInbox = Inbox(a)
            _ = try await a.hello(client: "trace-a")
            _ = try await a.subscribe(channel: "EmergenciesOfKind", params: ["kind": "traced"])
            try await Connection.run(url: two.webSocketURL, logger: Self.logger) { b in
                let bInbox = Inbox(b)
                _ = try await b.hello(client: "trace-b")
                let subscription = try await b.subscribe(channel: "EmergenciesOfKind", params: ["kind": "traced"])
                // 1 over HTTP to broker-1, 2 (not sampled) over WebSocket to broker-1, 3 over WebSocket to broker-2.
                try await Self.publishOverHTTP(one, t1)
                _ = try await a.publish(stream: "emergencies", events: [Self.event], traceparent: t2.traceparent)
                _ = try await b.publish(stream: "emergencies", events: [Self.event], traceparent: t3.traceparent)
                #expect(try await bInbox.notifications(3).map(\.seq) == [1, 2, 3])
                try await b.ack(subscription: subscription.subscription, seq: 3)
                // broker-2 drains: b is told to move to broker-1.
                _ = try await controller.submitCommand(.drain, target: .component("broker-2"), timeoutSeconds: 20)
                while true {
                    let message = try await bInbox.next(timeout: .seconds(20))
                    if case .migrate(_, let to, _) = message {
                        #expect(to == "broker-1")
                        break
                    }
                }
            }
            // Published while b is away, to broker-2 (draining brokers still take publishes).
            try await Self.publishOverHTTP(two, t4)
            #expect(try await aInbox.notifications(4).map(\.seq) == [1, 2, 3, 4])
        }
        // b comes back on broker-1, as told: 4 is replayed there.
        try await Connection.run(url: one.webSocketURL, logger: Self.logger) { b in
            let inbox = Inbox(b)
            _ = try await b.hello(client: "trace-b")
            let seqs = try await inbox.notifications(1).map(\.seq)
            #expect(seqs.last == 4 || seqs == [1])  // 1…4 if broker-2 had not yet stored the ack of 3
        }

        // Every expected span, from both brokers (they export in batches, every few seconds).
        let spans = try await waitForValue("the spans of publishes 1, 3 and 4 and of the migration", timeout: .seconds(45)) { () -> [OTLPReceiver.Span]? in
            let spans = receiver.received
            let complete =
                Self.deliveries(spans, t1).count >= 2 && Self.deliveries(spans, t3).count >= 2
                && Self.deliveries(spans, t4).contains { $0.attributes["tocsin.replayed"] == .bool(true) }
                && Self.deliveries(spans, t4).contains { $0.attributes["tocsin.client"] == .string("trace-a") }
                && spans.contains { $0.name == "migrate" } && spans.filter { $0.name == "publish emergencies" }.count >= 3
                && spans.filter { $0.name == "commit" }.count >= 3
            return complete ? spans : nil
        }

        for (caller, broker, transport) in [(t1, "broker-1", "http"), (t3, "broker-2", "websocket"), (t4, "broker-2", "http")] {
            let publish = try #require(spans.first { $0.traceID == caller.trace && $0.name == "publish emergencies" }, "\(caller)")
            // In the caller's trace, under its span; a producer span of the broker it reached.
            #expect(publish.parentSpanID == caller.span)
            #expect(publish.kind == 4 && publish.instance == broker)
            #expect(publish.attributes["network.transport.protocol"] == .string(transport))
            #expect(publish.attributes["messaging.destination.name"] == .string("emergencies"))
            let commit = try #require(spans.first { $0.traceID == caller.trace && $0.name == "commit" })
            #expect(commit.parentSpanID == publish.spanID && commit.instance == broker)
            #expect(commit.attributes["tocsin.seq.first"] == publish.attributes["tocsin.seq.first"])
            // Every delivery, on either broker, is a consumer span under the publish.
            let delivered = Self.deliveries(spans, caller)
            #expect(delivered.allSatisfy { $0.parentSpanID == publish.spanID && $0.kind == 5 }, "\(delivered)")
            #expect(delivered.allSatisfy { $0.attributes["tocsin.seq"] == publish.attributes["tocsin.seq.first"] })
        }
        // Live on the broker each subscriber was on.
        for caller in [t1, t3] {
            let live = Self.deliveries(spans, caller).filter { $0.attributes["tocsin.replayed"] == .bool(false) }
            #expect(Set(live.map { "\($0.attributes["tocsin.client"]?.stringValue ?? "?")@\($0.instance ?? "?")" }) == ["trace-a@broker-1", "trace-b@broker-2"])
        }
        // Published on broker-2, delivered on broker-1: live to a, replayed to b after its migration.
        let four = Self.deliveries(spans, t4).filter { $0.attributes["tocsin.client"] == .string("trace-b") }
        #expect(four.contains { $0.instance == "broker-1" && $0.attributes["tocsin.replayed"] == .bool(true) }, "\(four)")
        let migrate = try #require(spans.first { $0.name == "migrate" })
        #expect(migrate.instance == "broker-2" && migrate.attributes["tocsin.client"] == .string("trace-b"))
        #expect(migrate.attributes["tocsin.migrate.to"] == .string("broker-1"))
        // The unsampled publish left no span anywhere (its events were stored without a trace).
        #expect(!spans.contains { $0.traceID == t2.trace }, "\(spans.filter { $0.traceID == t2.trace })")
    }
}
}
