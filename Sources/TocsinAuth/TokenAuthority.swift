import Foundation
public import JWTKit
import Synchronization
public import TocsinCore

/// Verifies and mints Tocsin's JWTs (docs/security.md) with the keys of a `KeyRing`. The keys
/// can be replaced while tokens are being checked (`reload`, on SIGHUP): a token is verified
/// against the key its header's `kid` names; a token without `kid` is accepted only when the
/// ring has a single key.
///
/// Claims: `sub` (the client id, 1 to 256 bytes), `exp` (required), `iat`, optional `nbf`, and
/// `scope` (space-separated `Scope`s). Time is checked against the caller's clock, not jwt-kit's.
public final class TokenAuthority: TokenVerifier {
    private struct Keys: Sendable {
        let ring: KeyRing
        let collection: JWTKeyCollection
    }

    private let keys: Mutex<Keys>
    /// Tokens verified lately, by their text: a client that sends the same token on every HTTP
    /// request costs one signature check per token, not one per request (ES256 costs ~100 µs).
    private let verified = Mutex<[String: Grant]>([:])
    private static let maxCached = 10_000

    public init(ring: KeyRing) async throws(TocsinError) {
        self.keys = Mutex(try await Self.keys(ring))
    }

    public var ring: KeyRing { keys.withLock { $0.ring } }

    /// Replaces the keys (tokens signed by a removed key are refused from now on).
    public func reload(_ ring: KeyRing) async throws(TocsinError) {
        let next = try await Self.keys(ring)
        keys.withLock { $0 = next }
        verified.withLock { $0.removeAll() }
    }

    private static func keys(_ ring: KeyRing) async throws(TocsinError) -> Keys {
        let collection = JWTKeyCollection()
        do {
            for key in ring.keys {
                let kid = JWKIdentifier(string: key.id)
                if let secret = key.secret {
                    await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: kid)
                } else if let pem = key.privateKeyPEM {
                    await collection.add(ecdsa: try ES256PrivateKey(pem: pem), kid: kid)
                } else if let pem = key.publicKeyPEM {
                    await collection.add(ecdsa: try ES256PublicKey(pem: pem), kid: kid)
                }
            }
        } catch {
            throw TocsinError(.badRequest, "a key does not load: \(error)")
        }
        return Keys(ring: ring, collection: collection)
    }

    // MARK: Verifying

    public func verify(_ token: String, nowMillis: Int64) async throws(TocsinError) -> Grant {
        let grant: Grant
        if let cached = verified.withLock({ $0[token] }) {
            grant = cached
        } else {
            grant = try await verifySignature(token)
            verified.withLock { cache in
                if cache.count >= Self.maxCached { cache.removeAll(keepingCapacity: true) }
                cache[token] = grant
            }
        }
        guard nowMillis < grant.expiresAtMillis else {
            throw TocsinError(.tokenExpired, "the token expired at \(TimeFormat.format(grant.expiresAtMillis)); get a fresh one")
        }
        if let notBefore = grant.notBeforeMillis, nowMillis < notBefore {
            throw TocsinError(.unauthorized, "the token is not valid before \(TimeFormat.format(notBefore))")
        }
        return grant
    }

    private func verifySignature(_ token: String) async throws(TocsinError) -> Grant {
        guard token.utf8.count <= ClientMessage.maxTokenBytes else {
            throw TocsinError(.unauthorized, "the token is longer than \(ClientMessage.maxTokenBytes) bytes")
        }
        let (collection, ring) = keys.withLock { ($0.collection, $0.ring) }
        // A token must name its key, unless there is only one: "any key that verifies" would let
        // a retired key's tokens in through another kid.
        let header = Self.headerKeyID(token)
        if let header {
            guard ring.keys.contains(where: { $0.id == header }) else {
                throw TocsinError(.unauthorized, "the token is signed with key '\(header)', which this node does not know (rotated out?)")
            }
        } else if ring.keys.count > 1 {
            throw TocsinError(.unauthorized, "the token names no key ('kid') and this node has several")
        }
        let claims: TocsinClaims
        do {
            claims = try await collection.verify(token, as: TocsinClaims.self)
        } catch {
            throw TocsinError(.unauthorized, "the token does not verify: \(Self.reason(error))")
        }
        return try claims.grant(keyID: header)
    }

    /// The `kid` of the token's header, read without trusting it (it only picks the key).
    static func headerKeyID(_ token: String) -> String? {
        guard let dot = token.firstIndex(of: ".") else { return nil }
        var base64 = token[..<dot].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), let header = try? JSONValue.parse(data) else { return nil }
        return header["kid"]?.stringValue
    }

    private static func reason(_ error: any Error) -> String {
        if let jwt = error as? JWTError { return jwt.reason ?? "\(jwt.errorType)" }
        return "\(error)"
    }

    // MARK: Minting

    /// A token for `client` with `scopes`, valid for `lifetime` from `nowMillis`, signed with the
    /// ring's signing key.
    public func mint(client: String, scopes: [Scope], lifetime: Duration, nowMillis: Int64) async throws(TocsinError) -> String {
        guard !client.isEmpty, client.utf8.count <= 256 else {
            throw TocsinError(.badRequest, "a token's client id must have 1 to 256 bytes")
        }
        let seconds = lifetime.components.seconds
        guard seconds >= 1, seconds <= 10 * 365 * 86_400 else {
            throw TocsinError(.badRequest, "a token's lifetime must be between 1 second and 10 years")
        }
        let (collection, ring) = keys.withLock { ($0.collection, $0.ring) }
        guard let key = ring.signingKey else {
            throw TocsinError(.badRequest, "the key file names no signing key ('sign')")
        }
        let now = Double(nowMillis) / 1000
        let claims = TocsinClaims(
            sub: SubjectClaim(value: client), exp: ExpirationClaim(value: Date(timeIntervalSince1970: now + Double(seconds))),
            iat: IssuedAtClaim(value: Date(timeIntervalSince1970: now)), nbf: nil, scope: scopes.map(\.description).joined(separator: " "))
        do {
            return try await collection.sign(claims, kid: JWKIdentifier(string: key.id))
        } catch {
            throw TocsinError(.internalError, "signing a token failed: \(error)")
        }
    }
}

/// The claims of a Tocsin token.
struct TocsinClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim
    var iat: IssuedAtClaim?
    var nbf: NotBeforeClaim?
    var scope: String?

    /// Time is checked by `TokenAuthority` with the caller's clock.
    func verify(using algorithm: some JWTAlgorithm) async throws {}

    func grant(keyID: String?) throws(TocsinError) -> Grant {
        guard !sub.value.isEmpty, sub.value.utf8.count <= 256 else {
            throw TocsinError(.unauthorized, "the token's 'sub' (client id) must have 1 to 256 bytes")
        }
        let scopes: [Scope]
        do {
            scopes = try Scope.list(scope ?? "")
        } catch {
            throw TocsinError(.unauthorized, "the token's 'scope' is invalid: \(error.message)")
        }
        let expires = exp.value.timeIntervalSince1970 * 1000
        guard expires.isFinite, abs(expires) < 9.0e15 else { throw TocsinError(.unauthorized, "the token's 'exp' is out of range") }
        var grant = Grant(client: sub.value, scopes: scopes, expiresAtMillis: Int64(expires), keyID: keyID)
        if let nbf {
            let notBefore = nbf.value.timeIntervalSince1970 * 1000
            guard notBefore.isFinite, abs(notBefore) < 9.0e15 else { throw TocsinError(.unauthorized, "the token's 'nbf' is out of range") }
            grant.notBeforeMillis = Int64(notBefore)
        }
        return grant
    }
}
