import Foundation
import PropertyBased
import Testing
import TocsinAuth
@testable import TocsinCore

/// Scopes, name patterns, grants and the rate limiter: the pure parts of docs/security.md.
struct AuthCoreTests {
    /// `*` patterns against a brute-force matcher (dynamic programming over both strings).
    @Test func namePatternsMatchLikeBruteForce() async {
        func brute(_ pattern: [Character], _ name: [Character]) -> Bool {
            var table = Array(repeating: Array(repeating: false, count: name.count + 1), count: pattern.count + 1)
            table[0][0] = true
            for i in 1...max(pattern.count, 1) where i <= pattern.count {
                for j in 0...name.count {
                    if pattern[i - 1] == "*" {
                        table[i][j] = table[i - 1][j] || (j > 0 && table[i][j - 1])
                    } else {
                        table[i][j] = j > 0 && table[i - 1][j - 1] && pattern[i - 1] == name[j - 1]
                    }
                }
            }
            return table[pattern.count][name.count]
        }
        let alphabet: [Character] = ["a", "b", "*"]
        await propertyCheck(count: 2000, input: Gen.int(in: 0...6).array(of: 1...7), Gen.int(in: 0...5).array(of: 0...8)) { p, n in
            let pattern = p.map { alphabet[$0 % 3] }
            let name = n.map { alphabet[$0 % 2] }
            guard let compiled = try? NamePattern(String(pattern)) else { return }
            #expect(compiled.matches(String(name)) == brute(pattern, name), "\(String(pattern)) ~ \(String(name))")
        }
    }

    @Test func scopesParseAndUnknownOnesAreRefused() throws {
        #expect(try Scope.list("publish:emergencies subscribe:Emerg* admin") == [
            .publish(try NamePattern("emergencies")), .subscribe(try NamePattern("Emerg*")), .admin,
        ])
        #expect(throws: TocsinError.self) { try Scope(parsing: "pubish:x") }
        #expect(throws: TocsinError.self) { try Scope(parsing: "publish:") }
        #expect(throws: TocsinError.self) { try Scope(parsing: "superuser") }
    }

    @Test func grantsAllowOnlyTheirScopesUntilTheyExpire() throws {
        let grant = Grant(client: "c", scopes: [.publish(try NamePattern("alerts-*")), .discovery], expiresAtMillis: 1000)
        #expect(grant.allows(.publish(stream: "alerts-nl")))
        #expect(!grant.allows(.publish(stream: "other")))
        #expect(!grant.allows(.admin))
        #expect(grant.allows(.owner("c")) && !grant.allows(.owner("d")))
        // Sub-identities `<client>#…` are the client's own; look-alike ids are not.
        #expect(grant.mayIdentify(as: "c#EmergenciesNearMe#1f") && grant.allows(.owner("c#x")))
        #expect(!grant.mayIdentify(as: "cc") && !grant.mayIdentify(as: "c#") && !grant.mayIdentify(as: "d#c"))
        try grant.check(.discovery, nowMillis: 999)
        #expect(throws: TocsinError(.tokenExpired, "the token expired at 1970-01-01T00:00:01Z; get a fresh one")) {
            try grant.check(.discovery, nowMillis: 1000)
        }
        #expect { try grant.check(.admin, nowMillis: 0) } throws: { ($0 as? TocsinError)?.code == .forbidden }
    }

    /// The bucket against a brute-force count: over any sequence of requests, what passed in
    /// any window never exceeds burst + rate × window, and a refusal's wait is exactly enough.
    @Test func theTokenBucketNeverLetsMoreThroughThanItsRate() async {
        await propertyCheck(count: 500, input: Gen.int(in: 0...400).array(of: 1...60), Gen.int(in: 1...5).array(of: 1...60)) { gaps, costs in
            let rate = 10.0, burst = 5.0
            var bucket = TokenBucket(rate: rate, burst: burst, now: 0)
            var now: Int64 = 0
            var passed: [(Int64, Double)] = []
            for (gap, cost) in zip(gaps, costs) {
                now += Int64(gap)
                switch bucket.take(Double(cost), now: now) {
                case .allowed:
                    passed.append((now, Double(cost)))
                case .refused(let wait):
                    guard let wait else {
                        #expect(Double(cost) > burst)
                        continue
                    }
                    var probe = bucket
                    #expect(probe.take(Double(cost), now: now + wait) == .allowed, "the wait is enough")
                }
            }
            for (i, (start, _)) in passed.enumerated() {
                for (end, _) in passed[i...] {
                    let total = passed.filter { $0.0 >= start && $0.0 <= end }.reduce(0) { $0 + $1.1 }
                    #expect(total <= burst + rate * Double(end - start) / 1000 + 1e-9)
                }
            }
        }
    }

    @Test func theLimiterForgetsFullBucketsFirstAndStaysBounded() {
        var limiter = RateLimiter(.init(perSecond: 1, burst: 2), maxKeys: 100)
        for i in 0..<1000 { _ = limiter.take("k\(i)", now: Int64(i)) }
        #expect(limiter.count <= 100)
        // A flooder keeps its empty bucket while it floods.
        #expect(limiter.take("k999", cost: 2, now: 1000) != .allowed)
    }

    /// The key file round-trips, and a token names its key: a token signed by a removed key,
    /// or by an unknown kid, is refused after a reload.
    @Test func keysRotateWithoutRefusingCurrentTokens() async throws {
        let old = KeyRing.Key.generate(id: "old", algorithm: .hs256)
        let new = KeyRing.Key.generate(id: "new", algorithm: .es256)
        let ring = KeyRing(keys: [old], signingKeyID: "old")
        #expect(try KeyRing(json: ring.json) == ring)
        let authority = try await TokenAuthority(ring: ring)
        let now: Int64 = 1_800_000_000_000
        let before = try await authority.mint(client: "c", scopes: [.admin], lifetime: .seconds(60), nowMillis: now)
        // Rotation: add the new key and sign with it; the old token still verifies.
        try await authority.reload(KeyRing(keys: [old, new], signingKeyID: "new"))
        let after = try await authority.mint(client: "c", scopes: [.admin], lifetime: .seconds(60), nowMillis: now)
        #expect(try await authority.verify(before, nowMillis: now).keyID == "old")
        #expect(try await authority.verify(after, nowMillis: now).keyID == "new")
        // Retire the old key: its tokens are refused, the new ones are not.
        try await authority.reload(KeyRing(keys: [new], signingKeyID: "new"))
        await #expect { try await authority.verify(before, nowMillis: now) } throws: { ($0 as? TocsinError)?.code == .unauthorized }
        #expect(try await authority.verify(after, nowMillis: now).client == "c")
        await #expect { try await authority.verify(after, nowMillis: now + 60_000) } throws: { ($0 as? TocsinError)?.code == .tokenExpired }
    }
}
