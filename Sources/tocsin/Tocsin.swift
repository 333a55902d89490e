import ArgumentParser
import Foundation
import TocsinCore
import TocsinHTTPClient

@main
struct Tocsin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tocsin",
        abstract: "Tocsin: durable streams, parameterized channels, real-time notifications.",
        subcommands: [
            Serve.self, ControllerCommand.self, BrokerCommand.self, Dev.self, Supervise.self, Status.self, Publish.self, Subscribe.self, Streams.self,
            Channels.self, Datasets.self, Config.self, Command.self, Chaos.self, Bench.self, Token.self, Keys.self,
        ],
        defaultSubcommand: nil
    )

    /// The entry point: the server commands first choose where Swift tasks run
    /// (`TaskExecutorChoice`), which SwiftNIO requires on the main thread before any task runs
    /// (`run()` already runs on Swift's pool).
    @MainActor static func main() async {
        if let command = CommandLine.arguments.dropFirst().first, ["serve", "broker", "controller"].contains(command) {
            do {
                try TaskExecutorChoice.fromEnvironment().install()
            } catch {
                exit(withError: error)
            }
        }
        await main(nil)
    }
}

/// Where a client command finds the broker.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "HTTP URL of a broker, or of any node of a network (comma-separated for several; env TOCSIN_URL).")
    var url: String = Environment.get("TOCSIN_URL") ?? "http://127.0.0.1:7400"

    @Option(name: .long, help: "The access token, when the network requires one (env TOCSIN_TOKEN; `tocsin serve` prints one).")
    var token: String? = Environment.get("TOCSIN_TOKEN")

    /// The token as the client library takes it.
    var tokenSource: TokenSource? { token.map { token in { @Sendable in token } } }

    /// The `Authorization` header for direct HTTP calls.
    var headers: [(String, String)] { token.map { [("Authorization", "Bearer " + $0)] } ?? [] }

    /// The seeds the client library starts discovery from.
    var seeds: [String] { url.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    var httpURL: String {
        BaseURL.trimmed(seeds.first ?? url)
    }

    @OptionGroup var tls: ClientTLSOptions

    /// The CAs https:// and wss:// nodes are verified against (`validate` has read the file).
    var trust: TLSTrust { (try? tls.trust()) ?? .system }
}

/// A failure a command explains in its own words: printed as "Error: <sentence>", exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
