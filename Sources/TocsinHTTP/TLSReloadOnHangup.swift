public import ServiceLifecycle
import UnixSignals

/// Reloads TLS certificates on SIGHUP (`TLSCertificateSource.reload()`), until graceful shutdown.
/// Made with `trapping(_:)`, which installs the signal handler before returning: a SIGHUP that
/// arrives once the process has said it listens reloads instead of killing it.
public struct TLSReloadOnHangup: Service {
    private let sources: [TLSCertificateSource]
    private let signals: UnixSignalsSequence

    /// Traps SIGHUP now; `run()` reloads `sources` on each one.
    public static func trapping(_ sources: [TLSCertificateSource]) async -> TLSReloadOnHangup {
        TLSReloadOnHangup(sources: sources, signals: await UnixSignalsSequence(trapping: .sighup))
    }

    public func run() async throws {
        for await _ in signals.cancelOnGracefulShutdown() {
            for source in sources { source.reload() }
        }
    }
}
