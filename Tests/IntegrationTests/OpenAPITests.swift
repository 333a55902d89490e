import Foundation
import Synchronization
import Testing
import TocsinDev
import TocsinTesting

extension MultiProcess {
/// docs/openapi.yaml cannot drift from the servers: Schemathesis (from PyPI; `.ci/run` installs
/// it) generates requests from it, valid and not, against a real broker and a real controller
/// (`tocsin dev`, authentication on), and checks that every answer's status is one the document
/// lists (so never an undocumented 500), with the content type and body schema it gives.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct OpenAPITests {
    static let document = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/openapi.yaml").path

    @Test func theBrokerAndTheControllerAnswerAsTheDocumentSays() async throws {
        guard (try? await Task.detached { try ChildProcess.output(of: "/usr/bin/env", ["python3", "-c", "import schemathesis"]) }.value) != nil else {
            Issue.record("the OpenAPI test needs Schemathesis: python3 -m pip install schemathesis (.ci/run does)")
            return
        }
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let lines = Mutex<[String]>([])
        let dev = try await ChildProcess(
            executable: ServerProcess.tocsinBinary,
            arguments: ["dev", "--port", "0", "--brokers", "1", "--enable-chaos", "--data-dir", directory + "/data", "--log-level", "error", "--no-fsync"],
            timeout: .seconds(60), output: { line in lines.withLock { $0.append(line) } })
        defer {
            dev.signal(SIGTERM)
            _ = dev.waitForExit()
        }
        func value(_ pattern: String) -> String? {
            lines.withLock { all in
                for line in all {
                    if let range = line.range(of: pattern, options: .regularExpression) {
                        return String(line[range].split(separator: pattern.hasPrefix("TOCSIN") ? "=" : " ").last ?? "")
                    }
                }
                return nil
            }
        }
        let token = try #require(value("TOCSIN_TOKEN=[^ ]+"))
        let controller = try #require(value("^controller-1 +[^ ]+"))
        let broker = try #require(value("^broker-1 +[^ ]+"))
        // (GET /v1/openapi.yaml is one of the operations: served, a YAML document with `openapi` and `paths`.)
        for (tag, url) in [("broker", broker), ("controller", controller)] {
            let arguments = [
                "python3", "-m", "schemathesis.cli", "run", Self.document, "--url", url, "-H", "Authorization: Bearer \(token)",
                "--include-tag", tag, "--exclude-path", "/v1/dashboard/events",
                "--checks", "status_code_conformance,content_type_conformance,response_schema_conformance",
                "-n", "25", "--phases", "examples,coverage,fuzzing", "--request-timeout", "10", "--seed", "20261207",
            ]
            do {
                let report = try await Task.detached { try ChildProcess.output(of: "/usr/bin/env", arguments) }.value
                print(report.split(separator: "\n").suffix(14).joined(separator: "\n"))
            } catch {
                Issue.record("Schemathesis found the \(tag) answering unlike docs/openapi.yaml: \(error)")
            }
        }
    }
}
}
