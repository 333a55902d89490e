import ArgumentParser
import Logging
import ServiceLifecycle
import TocsinHTTP
import TocsinHTTPClient

/// `--tls-cert` and `--tls-key`: the listener of `serve`, `broker` and `controller` speaks TLS
/// with them, and rereads them on SIGHUP.
struct ServerTLSOptions: ParsableArguments {
    @Option(
        name: .customLong("tls-cert"),
        help: "PEM file of the certificate chain (server certificate first) to serve HTTPS and WSS with; reread on SIGHUP (env TOCSIN_TLS_CERT). Needs --tls-key.")
    var certificateFlag: String?

    @Option(name: .customLong("tls-key"), help: "PEM file of the private key of --tls-cert; reread on SIGHUP (env TOCSIN_TLS_KEY).")
    var keyFlag: String?

    /// `--tls-cert`, else `TOCSIN_TLS_CERT`.
    var certificate: String? { certificateFlag ?? Environment.get("TOCSIN_TLS_CERT") }
    /// `--tls-key`, else `TOCSIN_TLS_KEY`.
    var key: String? { keyFlag ?? Environment.get("TOCSIN_TLS_KEY") }

    /// `http`, or `https` with a certificate.
    var scheme: String { certificate == nil ? "http" : "https" }

    func validate() throws {
        guard (certificate == nil) == (key == nil) else {
            throw ValidationError("--tls-cert and --tls-key (or TOCSIN_TLS_CERT and TOCSIN_TLS_KEY) go together: give both or neither")
        }
    }

    /// The certificate source (the files read now; an unusable one ends the start with a
    /// sentence naming it), and the service that rereads it on SIGHUP, whose handler is
    /// installed before this returns. nil without TLS.
    func load(logger: Logger) async throws -> (TLSCertificateSource, any Service)? {
        guard let certificate, let key else { return nil }
        let source: TLSCertificateSource
        do {
            source = try TLSCertificateSource(certificatePath: certificate, keyPath: key, logger: logger)
        } catch let error as TLSFilesError {
            throw CommandFailure(error.description)
        }
        return (source, await TLSReloadOnHangup.trapping([source]))
    }
}

/// `--tls-ca`: a PEM file of CAs trusted, besides the system's, for `https://` and `wss://`.
struct ClientTLSOptions: ParsableArguments {
    @Option(
        name: .customLong("tls-ca"),
        help: "PEM file of CA certificates to trust for https:// and wss:// besides the system's, e.g. a private CA (env TOCSIN_TLS_CA).")
    var caFileFlag: String?

    /// `--tls-ca`, else `TOCSIN_TLS_CA`.
    var caFile: String? { caFileFlag ?? Environment.get("TOCSIN_TLS_CA") }

    func validate() throws {
        _ = try trust()
    }

    /// The system's CAs, plus the file's.
    func trust() throws -> TLSTrust {
        guard let caFile else { return .system }
        do {
            return try TLSTrust(caFile: caFile)
        } catch let error as TLSTrustError {
            throw ValidationError("--tls-ca (or TOCSIN_TLS_CA): \(error.description)")
        }
    }
}
