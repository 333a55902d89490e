/// Turns a bearer token into a `Grant`, or refuses it: `unauthorized` (malformed, forged, signed
/// by an unknown key, not yet valid) or `token_expired`. The broker and the controller take one;
/// `TocsinAuth.TokenAuthority` is the JWT implementation.
public protocol TokenVerifier: Sendable {
    func verify(_ token: String, nowMillis: Int64) async throws(TocsinError) -> Grant
}

/// How a node checks who is calling.
public enum Authentication: Sendable {
    /// Every request needs a token the verifier accepts (the default for every command).
    case tokens(any TokenVerifier)
    /// No checks at all (`--insecure-no-auth`): anyone who reaches the node may do anything.
    case disabled

    public var verifier: (any TokenVerifier)? {
        if case .tokens(let verifier) = self { return verifier }
        return nil
    }
}

/// Where a client gets its current token: called before each connection or request (it may
/// cache, renew, or read a file). Its errors fail the call they were asked for.
public typealias TokenSource = @Sendable () async throws -> String
