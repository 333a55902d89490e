import ArgumentParser
import Foundation
import TocsinClient
import TocsinCore

/// `tocsin datasets`: list datasets, define one from a JSON file, load records from JSON or CSV.
struct Datasets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List datasets, define one, or load records into one.",
        subcommands: [List.self, Define.self, Load.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List datasets: version, records, key, fields.")

        @OptionGroup var server: ServerOptions

        func run() async throws {
            let list = try await HTTPCall.call(.GET, "\(server.httpURL)/v1/datasets", headers: server.headers, using: HTTPCall.shared(trusting: server.trust))
            for d in list["datasets"]?.arrayValue ?? [] {
                let fields = (d["fields"]?.arrayValue ?? []).map { f in
                    "\(f["name"]?.stringValue ?? "?"):\(f["type"]?.stringValue ?? "?")\(f["optional"] == .bool(true) ? "?" : "")"
                }
                let indexed = (d["index"]?.arrayValue ?? []).compactMap(\.stringValue)
                print(
                    "\(d["name"]?.stringValue ?? "?")  version \(d["version"]?.intValue ?? 0)  \(d["count"]?.intValue ?? 0) records  key \(d["key"]?.stringValue ?? "?")  (\(fields.joined(separator: ", ")))\(indexed.isEmpty ? "" : "  indexed: " + indexed.joined(separator: ", "))"
                )
            }
        }
    }

    struct Define: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Define a dataset from a JSON file: {\"fields\": [...], \"key\": \"id\", \"index\": [...]}.",
            discussion: "Example: tocsin datasets define shelters examples/shelters.dataset.json")

        @OptionGroup var server: ServerOptions

        @Argument(help: "The dataset's name (an identifier).")
        var name: String

        @Argument(help: "The definition, a JSON file.")
        var file: String

        func run() async throws {
            let body = try JSONValue.parse(try String(contentsOfFile: file, encoding: .utf8))
            _ = try await HTTPCall.call(.PUT, "\(server.httpURL)/v1/datasets/\(name)", body: body, headers: server.headers, using: HTTPCall.shared(trusting: server.trust))
            print("defined dataset \(name)")
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load records into a dataset from a JSON or CSV file, in batches.",
            discussion: """
                JSON: an array of records, or one record per line. CSV: a header row naming the fields, \
                <field>.lat and <field>.lon for a geo field, list items separated by ';'. Every record \
                is checked before the first batch is sent; each batch is stored whole.
                Example: tocsin datasets load shelters examples/shelters.csv
                """)

        @OptionGroup var server: ServerOptions

        @Argument(help: "The dataset.")
        var name: String

        @Argument(help: "A .json, .jsonl or .csv file ('-' for standard input, read as JSON lines).")
        var file: String

        @Option(help: "Records per request (1 to 10000).")
        var batch = 1000

        func run() async throws {
            guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be from 1 to 10000") }
            let client = HTTPCall.shared(trusting: server.trust)
            let text: String
            if file == "-" {
                var lines: [String] = []
                while let line = readLine() { lines.append(line) }
                text = lines.joined(separator: "\n")
            } else {
                text = try String(contentsOfFile: file, encoding: .utf8)
            }
            let description = try await HTTPCall.call(.GET, "\(server.httpURL)/v1/datasets/\(name)", headers: server.headers, using: client)
            let definition = try DatasetDefinition(name: name, json: description.withoutKeys(["version", "count"]))
            var records: [JSONValue]
            if file.lowercased().hasSuffix(".csv") {
                records = try DatasetCSV.records(text, definition: definition)
            } else if case .array(let all) = try? JSONValue.parse(text) {
                records = all
            } else {
                records = []
                for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                where !line.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) {
                    do {
                        records.append(try JSONValue.parse(String(line)))
                    } catch {
                        throw ValidationError("line \(i + 1): \(error.message)")
                    }
                }
            }
            for (i, record) in records.enumerated() {
                if case .failure(let error) = DatasetTable.write(from: record, definition: definition) {
                    throw ValidationError("record \(i + 1): \(error.message)")
                }
            }
            var version: Int64 = 0
            var start = 0
            while start < records.count {
                let chunk = Array(records[start..<min(start + batch, records.count)])
                let reply = try await HTTPCall.call(
                    .POST, "\(server.httpURL)/v1/datasets/\(name)/records", body: .array(chunk), headers: server.headers, using: client)
                version = reply["version"]?.intValue ?? version
                start += chunk.count
            }
            print("loaded \(records.count) record(s) into \(name): version \(version)")
        }
    }
}

extension JSONValue {
    fileprivate func withoutKeys(_ keys: Set<String>) -> JSONValue {
        guard case .object(let o) = self else { return self }
        return .object(o.filter { !keys.contains($0.key) })
    }
}
