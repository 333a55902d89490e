import ArgumentParser
import Foundation
import Logging
import TocsinAuth
import TocsinCore
import TocsinHTTPClient
import TocsinLoad

/// `tocsin chaos`: drive the chaos API of `tocsin dev --enable-chaos`.
struct Chaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Break a `tocsin dev --enable-chaos` network on purpose: list its processes, kill or pause one, or kill one every N seconds under a durable load and report what was lost.",
        subcommands: [ChaosWorkers.self, ChaosKill.self, ChaosPause.self, ChaosRun.self])
}

struct ChaosOptions: ParsableArguments {
    @Option(help: "The chaos API's URL (`tocsin dev` prints it; env TOCSIN_CHAOS_URL).")
    var url: String = Environment.get("TOCSIN_CHAOS_URL") ?? "http://127.0.0.1:7299"

    @Option(help: "A token with the admin scope (env TOCSIN_TOKEN); or give --auth-keys.")
    var token: String? = Environment.get("TOCSIN_TOKEN")

    @Option(name: .customLong("auth-keys"), help: "The network's key file: tokens are minted from it (env TOCSIN_AUTH_KEYS).")
    var keyFile: String? = Environment.get("TOCSIN_AUTH_KEYS")

    func authority() async throws -> TokenAuthority? {
        guard let keyFile else { return nil }
        return try await TokenAuthority(ring: try KeyRing.load(path: keyFile))
    }

    func adminToken() async throws -> String? {
        if let token { return token }
        guard let authority = try await authority() else { return nil }
        return try await authority.mint(client: "chaos", scopes: [.admin], lifetime: .seconds(86_400), nowMillis: Token.nowMillis())
    }

    func call(_ method: HTTPCall.Method, _ path: String, body: JSONValue? = nil) async throws -> JSONValue {
        let headers = try await adminToken().map { [("Authorization", "Bearer " + $0)] } ?? []
        do {
            let reply = try await HTTPCall.send(
                method, BaseURL.join(BaseURL.trimmed(url), path), rawBody: body?.serialized, headers: headers, timeout: .seconds(10))
            return try HTTPCall.checked(reply, url: url + path)
        } catch let failure as TransportFailure {
            throw CommandFailure(failure.sentence(role: "the chaos API", runBy: "`tocsin dev --enable-chaos`"))
        }
    }

    func workers() async throws -> [JSONValue] { try await call(.GET, "/v1/workers")["workers"]?.arrayValue ?? [] }
}

private func describe(_ w: JSONValue) -> String {
    "\(w["id"]?.stringValue ?? "?") (\(w["role"]?.stringValue ?? "?"), pid \(w["pid"]?.intValue ?? 0), incarnation \(w["incarnation"]?.intValue ?? 0))"
}

struct ChaosWorkers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "workers", abstract: "List every process: role, id, pid, incarnation, state.")
    @OptionGroup var chaos: ChaosOptions

    func run() async throws {
        for w in try await chaos.workers() {
            print("\(w["role"]?.stringValue ?? "?")\t\(w["id"]?.stringValue ?? "?")\tpid \(w["pid"]?.intValue ?? 0)\tincarnation \(w["incarnation"]?.intValue ?? 0)\t\(w["state"]?.stringValue ?? "?")\t\(w["url"]?.stringValue ?? "")")
        }
    }
}

struct ChaosKill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "SIGKILL a process: an id, random, random-broker, or leader (the leading controller).")
    @Argument var target: String
    @OptionGroup var chaos: ChaosOptions

    func run() async throws {
        let done = try await chaos.call(.POST, "/v1/chaos", body: .object(["action": .string("kill"), "target": .string(target)]))
        print("killed \(describe(done["worker"] ?? .null))")
    }
}

struct ChaosPause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "SIGSTOP a process for some seconds, then SIGCONT it.")
    @Argument var target: String
    @Option(help: "How long (1...300 s); past the supervisor's health checks (3 s) it is killed and restarted, as a hung process would be.")
    var seconds = 5
    @OptionGroup var chaos: ChaosOptions

    func run() async throws {
        let done = try await chaos.call(
            .POST, "/v1/chaos", body: .object(["action": .string("pause"), "target": .string(target), "seconds": .int(Int64(seconds))]))
        print("paused \(describe(done["worker"] ?? .null)) for \(seconds) s")
    }
}

/// Kill one process every `--every` seconds for `--duration` seconds while durable subscribers
/// receive a publisher's events through the network; then check that every acknowledged event
/// reached every subscriber, once and in order, and that every killed process came back.
struct ChaosRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Kill a process every N seconds under a durable load; report what was lost (it must be nothing). Exits 1 otherwise.")

    @Option(help: "Seconds between kills.")
    var every = 10.0
    @Option(help: "Seconds to keep killing.")
    var duration = 180.0
    @Option(help: "Durable subscribers.")
    var subscribers = 300
    @Option(help: "Events published a second.")
    var rate = 20
    @Option(help: "What to kill each time: random-broker, random, leader, or an id.")
    var target = "random-broker"
    @Option(help: "Seconds to wait, after the last kill, for every subscriber to catch up.")
    var settle = 60.0
    @OptionGroup var chaos: ChaosOptions

    mutating func validate() throws {
        guard every >= 1, duration >= every, duration <= 86_400 else { throw ValidationError("need 1 ≤ --every ≤ --duration ≤ 86400") }
        guard (1...10_000).contains(subscribers), (1...10_000).contains(rate) else { throw ValidationError("--subscribers and --rate must be in 1...10000") }
        guard settle >= 1, settle <= 3600 else { throw ValidationError("--settle must be in 1...3600") }
    }

    func run() async throws {
        var logger = Logger(label: "tocsin.chaos")
        logger.logLevel = .critical
        let before = try await chaos.workers()
        let seeds = before.filter { $0["role"]?.stringValue == "controller" }.compactMap { $0["url"]?.stringValue }
        guard !seeds.isEmpty else { throw CommandFailure("the chaos API lists no controller") }
        let kind = "chaos-\(UInt32.random(in: 0...UInt32.max))"
        let authority = try await chaos.authority()
        var audienceConfiguration = Audience.Configuration(count: subscribers, seeds: seeds, kind: kind)
        audienceConfiguration.initialBackoff = .milliseconds(500)
        var feedConfiguration = Feed.Configuration(seeds: seeds, kind: kind, rate: rate)
        if let authority {
            audienceConfiguration.token = { client in
                MintedToken(authority: authority, client: client, scopes: [.subscribe(try! NamePattern("EmergenciesOfKind")), .discovery], nowMillis: Token.nowMillis).source
            }
            feedConfiguration.token = MintedToken(
                authority: authority, client: "\(kind)-publisher", scopes: [.publish(try NamePattern("emergencies")), .discovery], nowMillis: Token.nowMillis
            ).source
        }
        let audience = Audience(configuration: audienceConfiguration, logger: logger)
        let feed = Feed(configuration: feedConfiguration, logger: logger)
        let listening = Task { await audience.run() }
        defer { listening.cancel() }
        defer { fflushStdout() }
        print("chaos run: \(subscribers) durable subscribers of EmergenciesOfKind(kind: \(kind)), \(rate) events/s, killing \(target) every \(every) s for \(duration) s")
        guard try await poll(timeout: .seconds(120), { audience.allConnected }) else {
            throw CommandFailure("not every subscriber connected within 120 s")
        }
        let publishing = Task { await feed.run() }
        let start = ContinuousClock.now
        var killed: [(id: String, incarnation: Int64)] = []
        var refused = 0
        while ContinuousClock.now - start < .seconds(duration) {
            try await Task.sleep(for: .seconds(every))
            do {
                // A loaded machine may be slow to answer: try a kill three times before counting it refused.
                var attempt = 0
                var answer: JSONValue?
                while answer == nil {
                    do {
                        answer = try await chaos.call(.POST, "/v1/chaos", body: .object(["action": .string("kill"), "target": .string(target)]))
                    } catch let error as CommandFailure where attempt < 2 {
                        attempt += 1
                        print("         (the chaos API did not answer: \(error); trying again)")
                    } catch let error as TocsinError where error.code == .timeout && attempt < 2 {
                        attempt += 1
                    }
                }
                let done = answer ?? .null
                let w = done["worker"] ?? .null
                killed.append((w["id"]?.stringValue ?? "?", w["incarnation"]?.intValue ?? 0))
                print(String(format: "%6.1f s  killed ", (ContinuousClock.now - start).seconds) + describe(w))
                fflushStdout()
            } catch {
                refused += 1
                print(String(format: "%6.1f s  no kill: ", (ContinuousClock.now - start).seconds) + "\(error)")
            }
        }
        feed.stop()
        await publishing.value
        let acknowledged = Set(feed.acknowledged.withLock { $0 })
        let caughtUp = try await poll(timeout: .seconds(settle)) { audience.received(all: acknowledged) }
        // Every process killed is running again as a later incarnation (a restart after a quick
        // second crash waits out the supervisor's backoff).
        let chaos = self.chaos
        let kills = killed
        @Sendable func notBack() async -> [String] {
            guard let after = try? await chaos.workers() else { return ["(the chaos API did not answer)"] }
            var missing: [String] = []
            for id in Set(kills.map(\.id)).sorted() {
                let last = kills.filter { $0.id == id }.map(\.incarnation).max() ?? 0
                let now = after.first { $0["id"]?.stringValue == id }
                if now?["state"]?.stringValue != "running" || (now?["incarnation"]?.intValue ?? 0) <= last { missing.append(id) }
            }
            return missing
        }
        _ = try await poll(timeout: .seconds(settle)) { await notBack().isEmpty }
        let notBack = await notBack()
        var lost = 0
        var subscribersMissing = 0
        var outOfOrder = 0
        var notRecovered = 0
        var delivered = 0
        for probe in audience.probes {
            let s = probe.snapshot
            let missing = acknowledged.subtracting(s.seqs).count
            lost += missing
            if missing > 0 { subscribersMissing += 1 }
            outOfOrder += s.outOfOrder
            notRecovered += s.notRecovered
            delivered += s.seqs.count
        }
        let reconnects = audience.probes.reduce(0) { $0 + max(0, $1.snapshot.connections - 1) }
        print("")
        print("chaos report")
        print(String(format: "  ran %.0f s: %d kills (%d refused), %d distinct processes", (ContinuousClock.now - start).seconds, killed.count, refused, Set(killed.map(\.id)).count))
        print("  events acknowledged: \(acknowledged.count) (publish calls that failed and were not acknowledged: \(feed.failures.load(ordering: .relaxed)))")
        print("  deliveries expected: \(acknowledged.count * subscribers), received: \(delivered), reconnects: \(reconnects), migrations: \(audience.migrationReasons.count)")
        print("  acknowledged events lost: \(lost) (subscribers missing any: \(subscribersMissing)); out of order: \(outOfOrder); not recovered: \(notRecovered)")
        print("  every killed process restarted: \(notBack.isEmpty ? "yes" : "no (\(notBack.joined(separator: ", ")))")")
        print("  all caught up within \(Int(settle)) s of the last kill: \(caughtUp ? "yes" : "no")")
        if lost > 0 || outOfOrder > 0 || notRecovered > 0 || !notBack.isEmpty || !caughtUp { throw ExitCode(1) }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
