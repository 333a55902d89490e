import ArgumentParser
import Dispatch
import Foundation
import Synchronization
import TocsinAuth
import TocsinCore

/// How a server command authenticates (docs/security.md): a key file, or explicitly none.
struct AuthOptions: ParsableArguments {
    @Option(
        name: .customLong("auth-keys"),
        help: "The network's key file (JSON; make one with `tocsin keys new`); tokens are checked against it (env TOCSIN_AUTH_KEYS).")
    var keyFileFlag: String?

    var keyFile: String? { keyFileFlag ?? Environment.get("TOCSIN_AUTH_KEYS") }

    @Flag(
        name: .customLong("insecure-no-auth"),
        help: "Check no tokens at all: anyone who reaches the node may publish, subscribe, define and delete. For tests and closed networks only.")
    var insecureNoAuth = false

    @Option(
        name: .customLong("allow-origin"),
        help: "An origin (https://app.example.org) whose browser pages may call this node and open WebSockets; repeat for several, * for any (env TOCSIN_ALLOW_ORIGIN, comma-separated). Default: none.")
    var allowOriginFlags: [String] = []

    var allowedOrigins: [String] {
        let given = allowOriginFlags.isEmpty ? (Environment.get("TOCSIN_ALLOW_ORIGIN").map { [$0] } ?? []) : allowOriginFlags
        return given.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func validate() throws {
        if insecureNoAuth, keyFile != nil {
            throw ValidationError("give --auth-keys or --insecure-no-auth, not both")
        }
        for origin in allowedOrigins where origin != "*" && !(origin.hasPrefix("http://") || origin.hasPrefix("https://")) {
            throw ValidationError("--allow-origin takes origins like https://app.example.org (or *), got '\(origin)'")
        }
    }

    /// The key ring's authority, or nil with `--insecure-no-auth` (after a warning). Without
    /// either flag, `defaultKeyFile` is used, and made with a fresh key if it does not exist
    /// (`serve`, `dev`); a command without a default refuses to start.
    func authority(defaultKeyFile: String?, port: Int) async throws -> TokenAuthority? {
        if insecureNoAuth {
            stderr(
                "WARNING: authentication is off (--insecure-no-auth): anyone who can reach port \(port) can publish false alerts, read every subscription and delete channels."
            )
            return nil
        }
        guard let path = keyFile ?? defaultKeyFile else {
            throw ValidationError(
                "a network node needs the network's key file: give --auth-keys FILE (made with `tocsin keys new --file FILE`), or --insecure-no-auth to run without authentication")
        }
        if keyFile == nil, !FileManager.default.fileExists(atPath: path) {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let key = KeyRing.Key.generate(id: KeyRing.newKeyID(), algorithm: .es256)
            try KeyRing(keys: [key], signingKeyID: key.id).save(path: path)
            stderr("made a new signing key (ES256, kid \(key.id)) in \(path); keep it secret, and give it to every node with --auth-keys")
        }
        return try await TokenAuthority(ring: try KeyRing.load(path: path))
    }
}

/// Prints a ready admin token on start (`serve`, `dev`), so the README's commands work.
func printAdminToken(_ authority: TokenAuthority) async throws {
    let token = try await authority.mint(
        client: "admin", scopes: Token.everything, lifetime: .seconds(30 * 86_400), nowMillis: Token.nowMillis())
    print("admin token (every scope, 30 days): export TOCSIN_TOKEN=\(token)")
    fflushStdout()
}

/// `tocsin token`: mints a token from the key file.
struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mint an access token from the network's key file.",
        discussion: """
            Scopes: publish:<stream>, subscribe:<channel>, read:<stream or dataset>, write:<dataset> (names may use * patterns), admin,
            discovery, metrics, cluster. Example: tocsin token --keys ./tocsin-data/auth-keys.json --client phone-17 \\
              --scope 'subscribe:Emergencies*' --scope discovery --ttl 3600
            """)

    @Option(help: "The key file (default: ./tocsin-data/auth-keys.json, which `tocsin serve` makes; env TOCSIN_AUTH_KEYS).")
    var keys: String = Environment.get("TOCSIN_AUTH_KEYS") ?? "./tocsin-data/auth-keys.json"

    @Option(help: "The client id the token is for: the identity of its durable subscriptions.")
    var client: String

    @Option(help: "A scope; repeat for several. Default: subscribe:* and discovery.")
    var scope: [String] = []

    @Option(help: "Seconds the token is valid (1 to 315360000).")
    var ttl: Int = 86_400

    static let everything: [Scope] = [
        .admin, .discovery, .metrics, .publish(try! NamePattern("*")), .subscribe(try! NamePattern("*")), .read(try! NamePattern("*")),
        .write(try! NamePattern("*")),
    ]

    static func nowMillis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func run() async throws {
        guard (1...315_360_000).contains(ttl) else { throw ValidationError("--ttl must be between 1 and 315360000 seconds") }
        let scopes: [Scope]
        do {
            scopes = try scope.isEmpty ? [.subscribe(try NamePattern("*")), .discovery] : scope.map { s throws(TocsinError) in try Scope(parsing: s) }
        } catch {
            throw ValidationError("--scope: \(error.message)")
        }
        let authority = try await TokenAuthority(ring: try KeyRing.load(path: keys))
        print(try await authority.mint(client: client, scopes: scopes, lifetime: .seconds(ttl), nowMillis: Self.nowMillis()))
    }
}

/// `tocsin keys`: makes and rotates the key file.
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make or rotate the network's signing keys.",
        subcommands: [New.self, Retire.self])

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a fresh key to a key file (made if missing); with --sign, new tokens are signed with it.")

        @Option(help: "The key file.")
        var file: String

        @Option(help: "HS256 (a shared secret) or ES256 (a P-256 key pair).")
        var alg: String = "ES256"

        @Option(help: "The key's id (default: k-<date>-<random>).")
        var kid: String?

        @Flag(help: "Sign new tokens with this key (always, for a new file).")
        var sign = false

        func run() async throws {
            guard let algorithm = KeyRing.Algorithm(rawValue: alg.uppercased()) else { throw ValidationError("--alg must be HS256 or ES256") }
            var ring = FileManager.default.fileExists(atPath: file) ? try KeyRing.load(path: file) : KeyRing(keys: [], signingKeyID: nil)
            let key = KeyRing.Key.generate(id: kid ?? KeyRing.newKeyID(), algorithm: algorithm)
            guard !ring.keys.contains(where: { $0.id == key.id }) else { throw ValidationError("the file already has a key '\(key.id)'") }
            ring.keys.append(key)
            if sign || ring.signingKeyID == nil { ring.signingKeyID = key.id }
            try ring.save(path: file)
            print("added \(algorithm.rawValue) key \(key.id) to \(file)\(ring.signingKeyID == key.id ? "; new tokens are signed with it" : "")")
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a key: tokens signed with it are refused once nodes reload (SIGHUP).")

        @Option(help: "The key file.")
        var file: String

        @Option(help: "The key's id.")
        var kid: String

        func run() async throws {
            var ring = try KeyRing.load(path: file)
            guard ring.keys.contains(where: { $0.id == kid }) else { throw ValidationError("no key '\(kid)' in \(file)") }
            guard ring.signingKeyID != kid else { throw ValidationError("'\(kid)' signs new tokens: make another key the signing one first (keys new --sign)") }
            ring.keys.removeAll { $0.id == kid }
            guard !ring.keys.isEmpty else { throw ValidationError("a key file keeps at least one key") }
            try ring.save(path: file)
            print("removed key \(kid) from \(file)")
        }
    }
}

/// SIGHUP: rereads what can change without a restart (the key file; TLS certificates where
/// configured). Each registered action runs on every SIGHUP; a failing one is reported and the
/// old state kept.
enum Hangup {
    private static let actions = Mutex<[@Sendable () async -> Void]>([])
    private static let installed = Mutex(false)

    static func onHangup(_ action: @escaping @Sendable () async -> Void) {
        actions.withLock { $0.append(action) }
        let first = installed.withLock { installed -> Bool in
            defer { installed = true }
            return !installed
        }
        guard first else { return }
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler {
            let current = actions.withLock { $0 }
            Task { for action in current { await action() } }
        }
        source.resume()
        Retained.source = source
    }

    private enum Retained {
        nonisolated(unsafe) static var source: (any DispatchSourceSignal)?
    }
}

extension AuthOptions {
    /// Reloads the key file into `authority` on SIGHUP (rotation without a restart).
    func reloadOnHangup(_ authority: TokenAuthority, defaultKeyFile: String?) {
        guard let path = keyFile ?? defaultKeyFile else { return }
        Hangup.onHangup {
            do {
                let ring = try KeyRing.load(path: path)
                try await authority.reload(ring)
                stderr("SIGHUP: reloaded \(ring.keys.count) key(s) from \(path); signing with \(ring.signingKeyID ?? "none")")
            } catch {
                stderr("SIGHUP: the key file \(path) was not reloaded, the old keys stay: \(error)")
            }
        }
    }
}
