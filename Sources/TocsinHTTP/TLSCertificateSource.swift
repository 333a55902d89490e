import Foundation
public import Logging
package import Metrics
package import NIOSSL
import Synchronization

/// The certificate chain and private key a TLS listener presents, read from two PEM files, and
/// read again on `reload()` (the executables call it on SIGHUP, `TLSReloadOnHangup`). Each new
/// connection takes the context current when it is accepted; connections already open keep
/// theirs. A reload that fails (a missing or unreadable file, a key that does not match the
/// certificate) is logged and keeps the context that was in use.
///
/// Shared by the broker and the controller (`BrokerConfiguration.tls`,
/// `ControllerConfiguration.tls`); whoever made it keeps it to reload it.
public final class TLSCertificateSource: Sendable {
    /// The PEM file of the certificate chain: the server's certificate first, then intermediates.
    public let certificatePath: String
    /// The PEM file of the private key of the first certificate.
    public let keyPath: String
    private let current: Mutex<NIOSSLContext>
    private let logger: Logger

    /// Reads both files; throws a `TLSFilesError` that names them and says what is wrong.
    public init(certificatePath: String, keyPath: String, logger: Logger) throws {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.logger = logger
        let (context, summary) = try Self.load(certificatePath: certificatePath, keyPath: keyPath)
        current = Mutex(context)
        logger.info("TLS certificate loaded", metadata: summary)
    }

    /// The context new connections use.
    package var context: NIOSSLContext { current.withLock { $0 } }

    /// Reads the files again and, if they make a working context, has new connections use it.
    /// Returns whether it did; a failure is logged (and counted in
    /// `tocsin_tls_reloads_total{result="failed"}`) and the previous context stays.
    @discardableResult
    public func reload() -> Bool {
        // Read and parse outside the lock; only the swap is under it.
        do {
            let (context, summary) = try Self.load(certificatePath: certificatePath, keyPath: keyPath)
            current.withLock { $0 = context }
            Counter(label: "tocsin_tls_reloads_total", dimensions: [("result", "ok")]).increment()
            logger.notice("TLS certificate reloaded; new connections use it", metadata: summary)
            return true
        } catch {
            Counter(label: "tocsin_tls_reloads_total", dimensions: [("result", "failed")]).increment()
            logger.error("TLS certificate reload failed; still serving the previous certificate", metadata: ["error": "\(error)"])
            return false
        }
    }

    private static func load(certificatePath: String, keyPath: String) throws -> (NIOSSLContext, Logger.Metadata) {
        func failure(_ problem: String) -> TLSFilesError {
            TLSFilesError(description: "cannot use the TLS certificate \(certificatePath) with the key \(keyPath): \(problem)")
        }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw failure("the certificate file cannot be read as PEM (\(error))")
        }
        guard let leaf = chain.first else { throw failure("the certificate file holds no certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw failure("the key file cannot be read as a PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw failure("the key does not go with the certificate, or either is unusable (\(error))")
        }
        let expiry = Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter))
        return (context, ["certificate": "\(certificatePath)", "chain": "\(chain.count)", "expires": "\(expiry.formatted(.iso8601))"])
    }
}

/// TLS files that cannot be used; `description` names them and says why.
public struct TLSFilesError: Error, CustomStringConvertible {
    public var description: String
}
