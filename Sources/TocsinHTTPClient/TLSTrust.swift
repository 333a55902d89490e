public import NIOSSL

/// Which certificate authorities a client trusts for `https://` and `wss://` peers: the
/// system's trust store, plus, when given, the CAs of one PEM file (a private CA, a test CA).
/// The peer's certificate must chain to one of them and name the host of the URL (a DNS name,
/// or an IP address in its subject alternative names). Nothing here turns verification off.
public struct TLSTrust: Sendable, Hashable, CustomStringConvertible {
    /// The PEM file whose CAs are trusted besides the system's; nil: the system's only.
    public let caFile: String?
    private let authorities: [NIOSSLCertificate]

    /// The system's trust store only.
    public static let system = TLSTrust(caFile: nil, authorities: [])

    private init(caFile: String?, authorities: [NIOSSLCertificate]) {
        self.caFile = caFile
        self.authorities = authorities
    }

    /// The system's trust store and the CA certificates of `caFile` (PEM, one or more); throws a
    /// `TLSTrustError` naming the file when it cannot be read or holds no certificate.
    public init(caFile: String) throws {
        let authorities: [NIOSSLCertificate]
        do {
            authorities = try NIOSSLCertificate.fromPEMFile(caFile)
        } catch {
            throw TLSTrustError(description: "cannot read the CA file \(caFile) as PEM certificates (\(error))")
        }
        guard !authorities.isEmpty else { throw TLSTrustError(description: "the CA file \(caFile) holds no certificate") }
        self.init(caFile: caFile, authorities: authorities)
    }

    /// A client configuration that verifies peers against these CAs.
    public var clientConfiguration: TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        // Closing, wait at most this for the server's close_notify (NIOSSL's default is 5 s).
        // A broker half-closed by a WebSocket client's close_notify does not send its own until
        // its side closes, so every closed wss:// connection cost its client 5 s.
        configuration.shutdownTimeout = .milliseconds(200)
        if !authorities.isEmpty { configuration.additionalTrustRoots = [.certificates(authorities)] }
        return configuration
    }

    public var description: String { caFile.map { "the system's CAs and those of \($0)" } ?? "the system's CAs" }

    public static func == (a: TLSTrust, b: TLSTrust) -> Bool { a.caFile == b.caFile && a.authorities == b.authorities }
    public func hash(into hasher: inout Hasher) { hasher.combine(caFile) }
}

/// A CA file that cannot be used; `description` names it and says why.
public struct TLSTrustError: Error, CustomStringConvertible {
    public var description: String
}
