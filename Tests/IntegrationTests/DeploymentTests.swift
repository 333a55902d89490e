import Foundation
import Testing
import TocsinDev
import TocsinTesting

/// The deployment files cannot drift: the Kubernetes manifests validate against the Kubernetes
/// schemas (`kubernetes-validate --strict`, from PyPI; `.ci/run` installs it), and every flag
/// the manifests and the Containerfile give `tocsin` is one the command takes.
@Suite(.timeLimit(.minutes(2)))
struct DeploymentTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var manifests: [String] {
        let directory = root.appendingPathComponent("deploy/kubernetes")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") }.sorted().map { directory.appendingPathComponent($0).path }
    }

    @Test func theManifestsValidateAgainstTheKubernetesSchemas() async throws {
        let files = Self.manifests
        #expect(files.count >= 4)
        let output: String
        do {
            output = try await Task.detached { try ChildProcess.output(of: "/usr/bin/env", ["python3", "-m", "kubernetes_validate", "--strict"] + files) }.value
        } catch {
            Issue.record("kubernetes-validate failed or is missing (python3 -m pip install kubernetes-validate; .ci/run does): \(error)")
            return
        }
        // One "passed" per resource: namespace, config map, secret, 2 deployments, 2 services, 2 budgets, the autoscaler.
        #expect(output.components(separatedBy: " passed ").count - 1 == 10, "\(output)")
    }

    @Test func everyFlagTheManifestsGiveIsOneTheCommandTakes() async throws {
        for (file, command) in [("controller.yaml", "controller"), ("broker.yaml", "broker")] {
            let text = try String(contentsOfFile: Self.root.appendingPathComponent("deploy/kubernetes/\(file)").path, encoding: .utf8)
            let flags = text.split(separator: "\n").compactMap { line -> String? in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard trimmed.hasPrefix("- --") else { return nil }
                return String(trimmed.dropFirst(2).prefix { $0 != "=" })
            }
            #expect(flags.count >= 4, "\(file) gives \(command) its flags")
            let help = try await Task.detached { try ChildProcess.output(of: ServerProcess.tocsinBinary, [command, "--help"]) }.value
            for flag in flags {
                #expect(help.contains(flag), "\(file): `tocsin \(command)` has no \(flag)")
            }
        }
    }
}
