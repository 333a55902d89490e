import ArgumentParser
import Foundation
import Logging
import TocsinClient
import TocsinCore

struct Subscribe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Subscribe to a channel and print notifications as they come; survives broker restarts.",
        discussion: """
            Parameters are NAME=VALUE; a VALUE that parses as JSON is used as such, otherwise as a string.
            Example: tocsin subscribe --client alice EmergenciesNearMe lat=52.37 lon=4.89 radiusKm=25
            """)

    @OptionGroup var server: ServerOptions

    @Option(help: "The client id under which the subscription is durable (env TOCSIN_CLIENT).")
    var client: String = Environment.get("TOCSIN_CLIENT") ?? "cli-\(ProcessInfo.processInfo.hostName)"

    @Option(help: "Prefer brokers of this region.")
    var region: String?

    @Option(help: "Where to start the first time: latest, earliest, EPOCH:SEQ, a time (2026-12-06T00:00:00Z: the events since then), or -DURATION (--from=-24h: the last 24 hours).")
    var from: String = "latest"

    @Flag(help: "Print each notification as one JSON line.")
    var json = false

    @Option(name: .customLong("max"), help: "Exit after this many notifications.")
    var maxNotifications: Int?

    @Argument(help: "The channel.")
    var channel: String

    @Argument(help: "Parameters, NAME=VALUE.")
    var params: [String] = []

    func run() async throws {
        var bound: [String: JSONValue] = [:]
        for p in params {
            guard let eq = p.firstIndex(of: "=") else { throw ValidationError("parameter '\(p)' must be NAME=VALUE") }
            let name = String(p[..<eq])
            let text = String(p[p.index(after: eq)...])
            bound[name] = (try? JSONValue.parse(text)) ?? .string(text)
        }
        let start: StartPosition
        switch from {
        case "latest": start = .latest
        case "earliest": start = .earliest
        case let text where TimeFormat.parse(text) != nil: start = .since(millis: TimeFormat.parse(text)!)
        case let text where text.hasPrefix("-") && Duration.parseMillis(String(text.dropFirst())) != nil:
            let window = Duration.parseMillis(String(text.dropFirst()))!
            guard window > 0, window <= StartPosition.maxHistoryMillis else { throw ValidationError("--from -DURATION must be more than 0 and at most -36500d") }
            start = .history(millis: window)
        default:
            let parts = from.split(separator: ":")
            guard parts.count == 2, let seq = Int64(parts[1]) else {
                throw ValidationError("--from must be latest, earliest, EPOCH:SEQ, a time (2026-12-06T00:00:00Z) or -DURATION (-24h: the last 24 hours)")
            }
            start = .position(StreamPosition(epoch: String(parts[0]), seq: seq))
        }
        // The subscriber's events below say everything its warnings would (connection lost, moved,
        // refused), once each: its log would repeat them on every reconnect attempt.
        var logger = Logger(label: "tocsin.subscribe")
        logger.logLevel = .critical
        var configuration = Subscriber.Configuration(seeds: server.seeds, client: client, region: region)
        configuration.token = server.tokenSource
        configuration.trust = server.trust
        let subscriber = Subscriber(
            configuration: configuration,
            requests: [SubscriptionRequest(channel: channel, params: bound, from: start)], logger: logger)
        var received = 0
        var warnings = Warnings()
        for await event in subscriber.events() {
            switch event {
            case .connected(let broker, let subs):
                warnings.connected()
                let positions = subs.map { "\($0.channel) \($0.subscription) at \($0.position.epoch):\($0.position.seq)" }
                stderr("connected to \(broker) as \(client); \(positions.joined(separator: "; "))")
            case .failed(let error):
                throw error
            case .migrated(let from, let to, let reason):
                stderr("moved from \(from) to \(to) (\(reason))")
            case .disconnected(let error, _):
                if warnings.first(disconnected: error) {
                    stderr("disconnected, retrying until it works: \(error)")
                }
            case .notRecovered(let info):
                let position = "\(info.position.epoch):\(info.position.seq)"
                if warnings.first("\(info.subscription) \(position)") {
                    stderr("warning: position of \(info.subscription) no longer exists; resuming from \(position)")
                }
            case .notification(let n):
                if json {
                    var o: [String: JSONValue] = [
                        "subscription": .string(n.subscription), "channel": .string(n.channel), "seq": .int(n.seq), "count": .int(Int64(n.count)),
                    ]
                    o["events"] = .array(
                        n.events.map { e in
                            var event: [String: JSONValue] = ["seq": .int(e.seq), "event": (try? JSONValue.parse(e.json)) ?? .null]
                            if let enriched = e.enriched { event["enriched"] = (try? JSONValue.parse(enriched)) ?? .null }
                            return .object(event)
                        })
                    print(JSONValue.object(o).serialized)
                } else if n.events.isEmpty {
                    print("[\(n.channel)] \(n.count) new match(es) up to seq \(n.seq); fetch with GET /v1/subscriptions/\(n.subscription)/results")
                } else {
                    for e in n.events {
                        print("[\(n.channel)] seq \(e.seq) \(e.json)")
                        if let enriched = e.enriched { print("    enriched \(enriched)") }
                    }
                }
                fflushStdout()
                received += 1
                if let max = maxNotifications, received >= max { return }
            }
        }
    }

    /// Which warnings were printed: each distinct one once, however often it recurs (a reconnect
    /// loop, a position reported lost on every reconnect). A reason for being disconnected is said
    /// again only after a connection succeeded in between.
    struct Warnings {
        private var said: Set<String> = []
        private var disconnects: Set<String> = []

        mutating func first(_ warning: String) -> Bool { said.insert(warning).inserted }

        mutating func first(disconnected reason: String) -> Bool { disconnects.insert(reason).inserted }

        mutating func connected() { disconnects.removeAll() }
    }

    func stderr(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
