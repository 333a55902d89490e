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
            print(try await HTTPCall.call(.GET, "\(server.httpURL)/v1/streams/\(name)").serialized)
            return
        }
        let reply = try await HTTPCall.call(.GET, "\(server.httpURL)/v1/streams")
        for s in reply["streams"]?.arrayValue ?? [] {
            let fields = (s["fields"]?.arrayValue ?? []).map { f in
                "\(f["name"]?.stringValue ?? ""):\(f["type"]?.stringValue ?? "")\(f["optional"] == .bool(true) ? "?" : "")"
            }
            print("\(s["name"]?.stringValue ?? "")  epoch \(s["epoch"]?.stringValue ?? "")  seq \(s["firstSeq"]?.intValue ?? 0)..\(s["lastSeq"]?.intValue ?? 0)  (\(fields.joined(separator: ", ")))")
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
            print(try await HTTPCall.call(.GET, "\(server.httpURL)/v1/channels/\(name)").serialized)
            return
        }
        let reply = try await HTTPCall.call(.GET, "\(server.httpURL)/v1/channels")
        for c in reply["channels"]?.arrayValue ?? [] {
            let params = (c["params"]?.arrayValue ?? []).map { p in
                "\(p["name"]?.stringValue ?? ""): \(p["type"]?.stringValue ?? "")\(p["default"].map { " = \($0.serialized)" } ?? "")"
            }
            var mode = c["mode"]?.stringValue ?? ""
            if let period = c["period"]?.stringValue { mode += " every \(period)" }
            print("\(c["name"]?.stringValue ?? "")(\(params.joined(separator: ", "))) on \(c["stream"]?.stringValue ?? ""), \(mode), \(c["delivery"]?.stringValue ?? "")")
            print("    where \(c["where"]?.stringValue ?? "")")
            print("    index \(c["index"]?.stringValue ?? "")")
        }
    }
}
