import ArgumentParser
import TocsinClient
import TocsinCore

struct Streams: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List streams, or show one.")

    @OptionGroup var server: ServerOptions

    @Argument(help: "A stream to show in full.")
    var name: String?

    func run() async throws {
        if let name {
            print(try StreamDescription(json: try await HTTPCall.call(.GET, "\(server.httpURL)/v1/streams/\(name)", headers: server.headers, using: HTTPCall.shared(trusting: server.trust))).json.serialized)
            return
        }
        let list = try StreamList(json: try await HTTPCall.call(.GET, "\(server.httpURL)/v1/streams", headers: server.headers, using: HTTPCall.shared(trusting: server.trust)))
        for s in list.streams {
            let fields = s.definition.schema.fields.map { f in "\(f.name):\(f.type.rawValue)\(f.optional ? "?" : "")" }
            print("\(s.name)  epoch \(s.epoch)  seq \(s.firstSeq)..\(s.lastSeq)  (\(fields.joined(separator: ", ")))")
        }
    }
}

struct Channels: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List channels, or show one.")

    @OptionGroup var server: ServerOptions

    @Argument(help: "A channel to show in full.")
    var name: String?

    func run() async throws {
        if let name {
            print(try ChannelDescription(json: try await HTTPCall.call(.GET, "\(server.httpURL)/v1/channels/\(name)", headers: server.headers, using: HTTPCall.shared(trusting: server.trust))).json.serialized)
            return
        }
        let list = try ChannelList(json: try await HTTPCall.call(.GET, "\(server.httpURL)/v1/channels", headers: server.headers, using: HTTPCall.shared(trusting: server.trust)))
        for c in list.channels {
            let d = c.definition
            let params = d.params.map { p in "\(p.name): \(p.type.rawValue)\(p.default.map { " = \($0.serialized)" } ?? "")" }
            var mode: String
            switch d.mode {
            case .continuous: mode = "continuous"
            case .repetitive(let ms): mode = "repetitive every \(Duration.format(millis: ms))"
            }
            print("\(d.name)(\(params.joined(separator: ", "))) on \(d.stream), \(mode), \(d.delivery.rawValue)")
            print("    where \(d.whereClause)")
            print("    index \(c.index)")
        }
    }
}
