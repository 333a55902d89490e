import Foundation
import TocsinAuth
import TocsinCore

/// `tocsin bench tokens`: what minting and checking a token costs, per algorithm, on one core:
/// a signature check (a token seen for the first time) and a cached one (the same token again,
/// as an HTTP client sends it with every request).
enum TokenBenchmark {
    static func run() async throws {
        let scopes: [Scope] = [.publish(try NamePattern("emergencies")), .subscribe(try NamePattern("Emergencies*")), .discovery]
        let now = Token.nowMillis()
        for algorithm in KeyRing.Algorithm.allCases {
            let ring = KeyRing(keys: [.generate(id: "k", algorithm: algorithm)], signingKeyID: "k")
            let authority = try await TokenAuthority(ring: ring)
            let count = algorithm == .hs256 ? 5_000 : 2_000  // within the cache (10,000)
            var tokens: [String] = []
            tokens.reserveCapacity(count)
            let minting = try await time {
                for i in 0..<count {
                    tokens.append(try await authority.mint(client: "client-\(i)", scopes: scopes, lifetime: .seconds(3600), nowMillis: now))
                }
            }
            // Each token is new to the authority: a full signature check.
            let checking = try await time {
                for token in tokens { _ = try await authority.verify(token, nowMillis: now) }
            }
            // The same tokens again: served from the cache of verified tokens.
            let cached = try await time {
                for token in tokens { _ = try await authority.verify(token, nowMillis: now) }
            }
            let perCall = { (d: Duration) in String(format: "%.1f µs", Double(d.components.attoseconds) / 1e12 / Double(count) + Double(d.components.seconds) * 1e6 / Double(count)) }
            print("\(algorithm.rawValue): mint \(perCall(minting)), first check \(perCall(checking)), cached check \(perCall(cached)) (\(count) tokens, \(tokens[0].utf8.count) bytes each)")
        }
    }

    private static func time(_ body: () async throws -> Void) async throws -> Duration {
        let start = ContinuousClock.now
        try await body()
        return ContinuousClock.now - start
    }
}
