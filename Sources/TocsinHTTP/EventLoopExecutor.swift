package import NIOCore
import NIOPosix

/// SwiftNIO's shared event-loop group (`MultiThreadedEventLoopGroup.singleton`, which the HTTP
/// server and client use) as Swift's global executor: a connection's task then resumes on the
/// thread that read its frame. The server commands choose it with `TOCSIN_TASK_EXECUTOR`.
public enum EventLoopExecutor {
    /// Installs it; call on the main thread, before any task has started. False if it could not be.
    @discardableResult
    public static func install() -> Bool {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
