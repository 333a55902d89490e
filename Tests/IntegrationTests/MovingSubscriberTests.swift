import Foundation
import Logging
import Synchronization
import Testing
import TocsinClient
import TocsinCore
import TocsinDev
import TocsinHTTPClient
import TocsinTesting

extension MultiProcess {
/// A subscriber walks across a city while reports are published around it. Its subscription's
/// `lat`/`lon` are bound to its record in `userLocations`, which it updates at each step; the
/// broker (a real `tocsin serve`) is SIGKILLed half way and restarted. At every step the
/// subscriber gets exactly the reports within 2 km of where it is: no gap, no duplicate, no
/// resubscribe, and across the crash it resumes and follows its record again.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct MovingSubscriberTests {
    final class Log: Sendable {
        let received = Mutex<[(seq: Int64, name: String)]>([])
        let connections = Atomic<Int>(0)

        func got(_ name: String) -> Bool { received.withLock { $0.contains { $0.name == name } } }
    }

    static let radiusKm = 2.0

    /// On SQLite and on PostgreSQL (which outlives the broker's SIGKILL).
    @Test(arguments: [false, true])
    func aWalkerGetsTheReportsNearEachPlaceAcrossASigkill(postgres: Bool) async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let database = postgres ? try await PostgresServer.database() : nil
        defer { database?.destroy() }
        let store = database.map { ["--store", $0.url] } ?? []
        var server = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "0", "--data-dir", directory] + store)
        let port = server.port
        let base = "http://127.0.0.1:\(port)"
        _ = try await HTTPCall.call(
            .PUT, base + "/v1/streams/reports",
            body: ["fields": [["name": "name", "type": "string"], ["name": "location", "type": "geo"]]])
        _ = try await HTTPCall.call(
            .PUT, base + "/v1/datasets/userLocations",
            body: ["fields": [["name": "client", "type": "string"], ["name": "location", "type": "geo"]], "key": "client"])
        _ = try await HTTPCall.call(
            .PUT, base + "/v1/channels/Near",
            body: [
                "stream": "reports", "params": [["name": "lat", "type": "double"], ["name": "lon", "type": "double"]],
                "where": .string("distance(location, point($lat, $lon)) <= \(Self.radiusKm)"),
            ])
        // The walk: 12 places 5 km apart along a parallel (more than two radii: a report near
        // one place is never near the previous one).
        let places = (0..<12).map { GeoPoint(lat: 52.2, lon: 4.5 + Double($0) * 0.0735) }
        func move(to place: GeoPoint) async throws {
            _ = try await HTTPCall.call(
                .PUT, base + "/v1/datasets/userLocations/records/walker",
                body: ["client": "walker", "location": ["lat": .double(place.lat), "lon": .double(place.lon)]])
        }
        try await move(to: places[0])

        let log = Log()
        var logger = Logger(label: "walker")
        logger.logLevel = .critical
        let subscriber = Subscriber(
            configuration: .init(url: "ws://127.0.0.1:\(port)/v1/ws", client: "walker"),
            requests: [
                SubscriptionRequest(
                    channel: "Near", params: ["lat": ["bind": "userLocations.location.lat"], "lon": ["bind": "userLocations.location.lon"]])
            ], logger: logger)
        let subscription = Task {
            for await event in subscriber.events() {
                switch event {
                case .connected: log.connections.add(1, ordering: .relaxed)
                case .notification(let n):
                    for e in n.events {
                        log.received.withLock { $0.append((e.seq, (try? JSONValue.parse(e.json))?["name"]?.stringValue ?? "?")) }
                    }
                default: break
                }
            }
        }
        try await waitUntil("the subscriber connected") { log.connections.load(ordering: .relaxed) >= 1 }

        var rng = SplitMix(seed: 7)
        var expected: [String] = []
        var published = 0
        @Sendable func publish(_ name: String, at point: GeoPoint) async throws -> Int64? {
            let reply = try await HTTPCall.call(
                .POST, base + "/v1/streams/reports/events", body: ["name": .string(name), "location": ["lat": .double(point.lat), "lon": .double(point.lon)]])
            return reply["seq"]?.intValue
        }
        /// Publishes markers at `place` until one arrives: the subscription is there.
        func arrive(at place: GeoPoint, step: Int) async throws {
            let n = Atomic<Int>(0)
            try await waitUntil("the subscription moved to place \(step)") {
                let name = "marker-\(step)-\(n.add(1, ordering: .relaxed).newValue)"
                guard (try? await publish(name, at: place)) != nil else { return false }
                return await (try? waitUntil("marker", timeout: .milliseconds(200)) { log.got(name) }) != nil
            }
        }
        for (step, place) in places.enumerated() {
            if step > 0 { try await move(to: place) }
            try await arrive(at: place, step: step)
            // Reports anywhere along the walk, some near here.
            for i in 0..<20 {
                let near = Int.random(in: 0..<3, using: &rng) == 0
                let centre = near ? place : places.randomElement(using: &rng)!
                // Within about 2.5 km of the centre: around the edge of the radius.
                let point = GeoPoint(
                    lat: centre.lat + Double.random(in: -0.02...0.02, using: &rng), lon: centre.lon + Double.random(in: -0.03...0.03, using: &rng))
                let name = "report-\(step)-\(i)"
                guard try await publish(name, at: point) != nil else { throw TestFailure("\(name) was not acknowledged") }
                published += 1
                if point.distanceKm(to: place) <= Self.radiusKm { expected.append(name) }
            }
            if step == 6 {
                // Half way: the broker dies with reports acknowledged and perhaps not delivered.
                server.kill(SIGKILL)
                server = try await ServerProcess(arguments: ["serve", "--insecure-no-auth", "--port", "\(port)", "--data-dir", directory] + store)
            }
            // A fence here: once it arrives, every report of this step was dispatched.
            let fence = "fence-\(step)"
            _ = try await publish(fence, at: place)
            try await waitUntil("the fence of place \(step)") { log.got(fence) }
        }
        subscription.cancel()

        let received = log.received.withLock { $0 }
        let seqs = received.map(\.seq)
        #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "strictly increasing seqs, no duplicates")
        let reports = received.map(\.name).filter { $0.hasPrefix("report-") }
        #expect(reports == expected, "exactly the reports near each place, in order")
        #expect(expected.count > 40 && published == 240, "\(expected.count) of \(published) reports were near the walker")
        #expect(log.connections.load(ordering: .relaxed) == 2, "one connection before the crash, one after: moves need no resubscribe")
        server.kill(SIGTERM)
    }
}
}
