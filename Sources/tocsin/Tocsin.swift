import ArgumentParser

@main
struct Tocsin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tocsin",
        abstract: "Tocsin: durable streams, parameterized channels, real-time notifications.",
        subcommands: [Serve.self, Publish.self, Subscribe.self, Streams.self, Channels.self, Bench.self],
        defaultSubcommand: nil
    )
}

/// Where a client command finds the broker.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "The broker's HTTP URL (env TOCSIN_URL).")
    var url: String = Environment.get("TOCSIN_URL") ?? "http://127.0.0.1:7400"

    var httpURL: String { url.hasSuffix("/") ? String(url.dropLast()) : url }

    var webSocketURL: String {
        var base = httpURL
        if base.hasPrefix("https://") { base = "wss://" + base.dropFirst(8) }
        else if base.hasPrefix("http://") { base = "ws://" + base.dropFirst(7) }
        return base + "/v1/ws"
    }
}
