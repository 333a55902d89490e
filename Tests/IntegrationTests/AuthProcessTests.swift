import Foundation
import Testing
import TocsinDev
import TocsinHTTPClient
import TocsinTesting

/// Authentication in real processes: `tocsin serve` is secure with no flags (it makes a key and
/// needs tokens), the CLI mints tokens from it, and keys rotate with SIGHUP, no restart.
@Suite(.timeLimit(.minutes(2)))
struct AuthProcessTests {
    static func token(_ keys: String, client: String, scopes: [String]) throws -> String {
        let (status, text) = try CommandLineTests.run(
            ["token", "--keys", keys, "--client", client] + scopes.flatMap { scope -> [String] in ["--scope", scope] }, capturing: .stdout)
        try #require(status == 0, "tocsin token failed")
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func serveIsSecureByDefaultAndKeysRotateOnSighup() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let server = try await ServerProcess(arguments: ["serve", "--port", "0", "--data-dir", directory, "--no-fsync"])
        defer { server.kill(SIGKILL) }
        let url = "http://127.0.0.1:\(server.port)/v1/streams"
        let keys = directory + "/auth-keys.json"
        #expect(FileManager.default.fileExists(atPath: keys), "serve made its key")
        let permissions = try FileManager.default.attributesOfItem(atPath: keys)[.posixPermissions] as? Int
        #expect(permissions == 0o600)
        #expect(try await HTTPCall.send(.GET, url).status == 401, "no token, no answer")
        let old = try Self.token(keys, client: "ops", scopes: ["admin"])
        @Sendable func status(_ token: String) async throws -> Int {
            try await HTTPCall.send(.GET, url, headers: [("Authorization", "Bearer " + token)]).status
        }
        #expect(try await status(old) == 200)
        // A second key signs from now on; after SIGHUP both are accepted.
        let file = try String(contentsOfFile: keys, encoding: .utf8)
        let oldKid = String(try #require(file.firstMatch(of: /"kid":"([^"]+)"/)?.1))
        #expect(try CommandLineTests.run(["keys", "new", "--file", keys, "--kid", "second", "--sign"]).status == 0)
        server.signal(SIGHUP)
        let new = try Self.token(keys, client: "ops", scopes: ["admin"])
        try await waitUntil("the new key is loaded") { (try? await status(new)) == 200 }
        #expect(try await status(old) == 200)
        // Retire the first key: its tokens are refused, the new ones are not.
        #expect(try CommandLineTests.run(["keys", "retire", "--file", keys, "--kid", oldKid]).status == 0)
        server.signal(SIGHUP)
        try await waitUntil("the old key is retired") { (try? await status(old)) == 401 }
        #expect(try await status(new) == 200)
    }

    @Test func networkNodesRefuseToStartWithoutKeysOrAnExplicitInsecureFlag() throws {
        for command in ["broker", "controller"] {
            let (status, stderr) = try CommandLineTests.run([command, "--port", "0"])
            #expect(status != 0)
            #expect(stderr.contains("--auth-keys FILE"), "\(command): \(stderr)")
        }
        let both = try CommandLineTests.run(["controller", "--port", "0", "--insecure-no-auth", "--auth-keys", "/nonexistent"])
        #expect(both.status != 0 && both.text.contains("not both"), "\(both.text)")
    }
}
