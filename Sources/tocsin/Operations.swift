import ArgumentParser
import Foundation
import TocsinCore
import TocsinHTTPClient

/// Where an operator command finds the controller (any controller of the network: changes
/// follow `not_leader` to the leader).
struct ControllerOptions: ParsableArguments {
    @Option(name: .long, help: "The controller's HTTP URL, comma-separated for several (env TOCSIN_CONTROLLER).")
    var controller: String = Environment.get("TOCSIN_CONTROLLER") ?? "http://127.0.0.1:7300"

    @Option(name: .long, help: "A token with the admin scope (env TOCSIN_TOKEN).")
    var token: String? = Environment.get("TOCSIN_TOKEN")

    @OptionGroup var tls: ClientTLSOptions

    /// Runs `body` with a client of the controllers, shut down after; a controller that cannot
    /// be reached is said plainly.
    func withClient<T: Sendable>(_ body: (ControllerClient) async throws -> T) async throws -> T {
        var client = ControllerClient(urls: controller.split(separator: ",").map(String.init), trust: try tls.trust())
        let token = self.token
        client.token = token.map { token in { @Sendable in token } }
        defer { Task { [client] in try? await client.shutdown() } }
        do {
            return try await body(client)
        } catch let failure as TransportFailure {
            throw CommandFailure(failure.sentence(role: "a controller", runBy: "`tocsin controller` or `tocsin dev`"))
        }
    }
}

/// Where a setting applies: `--role` or `--component`.
struct ScopeOptions: ParsableArguments {
    @Option(help: "Every component of this role: broker or controller.")
    var role: String?

    @Option(help: "One component, by id (see `tocsin status`).")
    var component: String?

    func scope() throws -> ConfigScope {
        switch (role, component) {
        case (let role?, nil): return .role(try ComponentRole(parsing: role))
        case (nil, let id?): return .component(id)
        default: throw ValidationError("say where it applies: --role broker|controller or --component ID (one of them)")
        }
    }
}

/// `tocsin config`: live configuration.
struct Config: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read and change live configuration: settings every broker or controller applies within a second, without a restart.",
        subcommands: [ConfigGet.self, ConfigSet.self, ConfigUnset.self, ConfigHistory.self])
}

struct ConfigGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Print the configuration version, every value set, and the live settings with their ranges.")

    @OptionGroup var options: ControllerOptions

    func run() async throws {
        let config = try await options.withClient { try await $0.config() }
        print("version \(config["version"]?.intValue ?? 0)")
        let values = config["values"]?.arrayValue ?? []
        if values.isEmpty { print("(nothing set: every component runs its startup values)") }
        for v in values {
            let scope = (try? ConfigScope(json: v["scope"] ?? .null)).map(String.init(describing:)) ?? "?"
            print("  \(v["key"]?.stringValue ?? "?") = \(v["value"]?.serialized ?? "?")   (\(scope))")
        }
        print("live settings:")
        for s in config["settings"]?.arrayValue ?? [] {
            var range = ""
            if let min = s["min"], let max = s["max"] { range = " \(min.serialized)...\(max.serialized)" }
            if let values = s["values"]?.arrayValue { range = " " + values.compactMap(\.stringValue).joined(separator: "|") }
            let roles = s["roles"]?.arrayValue?.compactMap(\.stringValue).joined(separator: ",") ?? ""
            print("  \(s["key"]?.stringValue ?? "?") (\(roles); \(s["type"]?.stringValue ?? "?")\(range)): \(s["help"]?.stringValue ?? "")")
        }
    }
}

struct ConfigSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set a live setting for a role or one component (numbers and booleans as such, anything else as text).")

    @Argument(help: "The setting, e.g. log.level or limits.publishEventsPerSecond (`tocsin config get` lists them).")
    var key: String

    @Argument(help: "The value, e.g. debug, 500, true.")
    var value: String

    @OptionGroup var scope: ScopeOptions
    @OptionGroup var options: ControllerOptions

    func run() async throws {
        let scope = try self.scope.scope()
        let answer = try await options.withClient { try await $0.setConfig(key, to: LiveSetting.parseArgument(value), in: scope) }
        printChange(answer)
    }
}

struct ConfigUnset: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unset", abstract: "Remove a setting from a role or component: it goes back to the role's value, or the startup value.")

    @Argument var key: String
    @OptionGroup var scope: ScopeOptions
    @OptionGroup var options: ControllerOptions

    func run() async throws {
        let scope = try self.scope.scope()
        printChange(try await options.withClient { try await $0.setConfig(key, to: nil, in: scope) })
    }
}

private func printChange(_ answer: JSONValue) {
    let version = answer["version"]?.intValue ?? 0
    guard answer["changed"]?.boolValue == true, let change = answer["change"] else {
        print("unchanged (configuration version \(version))")
        return
    }
    let old = change["old"].map { $0 == .null ? "unset" : $0.serialized } ?? "unset"
    let new = change["new"].map { $0 == .null ? "unset" : $0.serialized } ?? "unset"
    print("configuration version \(version): \(change["key"]?.stringValue ?? "?") \(old) → \(new); components apply it within a second (`tocsin status` shows the version each runs)")
}

struct ConfigHistory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "history", abstract: "Print the latest configuration changes, newest first: who, when, what.")

    @Option(help: "How many changes (1...1000).")
    var limit = 20

    @OptionGroup var options: ControllerOptions

    func run() async throws {
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be in 1...1000") }
        for c in try await options.withClient({ try await $0.configHistory(limit: limit) }) {
            let old = c.old?.serialized ?? "unset"
            let new = c.new?.serialized ?? "unset"
            print("v\(c.version)  \(TimeFormat.format(c.atMillis))  \(c.by)  \(c.scope): \(c.key) \(old) → \(new)")
        }
    }
}

/// `tocsin command`: tell components to do something and see it done.
struct Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tell one component, or every component of a role, to do something; prints the result from each as it comes.",
        discussion: """
            Kinds: drain, undrain (brokers), reload-tls, log-level LEVEL, snapshot (brokers and controllers).
            A command waits for a component that is restarting: it is carried out when the component is back,
            until the timeout. Examples:
              tocsin command drain --component broker-2
              tocsin command log-level debug --role broker
              tocsin command snapshot --role broker
            """)

    @Argument(help: "drain, undrain, reload-tls, log-level, snapshot.")
    var kind: String

    @Argument(help: "For log-level: the level.")
    var argument: String?

    @OptionGroup var scope: ScopeOptions

    @Option(help: "Seconds to wait for every result (1...86400).")
    var timeout = 30

    @Flag(help: "Print the command's id and return without waiting.")
    var noWait = false

    @OptionGroup var options: ControllerOptions

    func run() async throws {
        guard let kind = CommandKind(rawValue: kind) else {
            throw ValidationError("unknown command kind '\(self.kind)' (known: \(CommandKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard (1...86_400).contains(timeout) else { throw ValidationError("--timeout must be in 1...86400 seconds") }
        var args: [String: JSONValue] = [:]
        if kind == .logLevel {
            guard let argument else { throw ValidationError("log-level needs the level: \(LogLevelName.all.joined(separator: ", "))") }
            args["level"] = .string(argument)
        } else if argument != nil {
            throw ValidationError("\(kind.rawValue) takes no argument")
        }
        let target: CommandTarget = try scope.scope()
        let noWait = self.noWait
        let failed = try await options.withClient { client -> Bool in
            var record = try await client.submitCommand(kind, args: .object(args), target: target, timeoutSeconds: timeout)
            print("\(record.id): \(kind.rawValue) to \(record.targets.map(\.component).joined(separator: ", "))")
            if noWait { return false }
            var shown: Set<String> = []
            while true {
                for t in record.targets where t.state.isFinal && !shown.contains(t.component) {
                    shown.insert(t.component)
                    print("  \(t.component): \(t.state.rawValue)\(t.result.map { " " + $0.serialized } ?? "")")
                }
                if record.isFinished { break }
                try await Task.sleep(for: .milliseconds(200))
                record = try await client.command(record.id)
            }
            return record.targets.contains { $0.state != .succeeded }
        }
        if failed { throw ExitCode(1) }
    }
}
