#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

enum Environment {
    static func get(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

func fflushStdout() { fflush(nil) }

/// Makes the event loops (`MultiThreadedEventLoopGroup.singleton`, which the HTTP server and
/// the HTTP client use) Swift concurrency's global executor, for the server commands. Call it on
/// the main thread, before any task has started (`Tocsin.main`).
///
/// A connection's task then runs on its channel's event loop: a frame read there resumes the
/// task on the same thread instead of waking one of Swift's pool threads, and a reply the task
/// writes needs no hop back. On this project's 2-core test machine that is one or two context
/// switches and ~50 µs of CPU less per published event (docs/performance.md). The price: a task
/// that blocks its thread blocks that event loop's connections, so tasks here must not block or
/// run long without a suspension point: commits run on the store's commit thread, reads wait on
/// GRDB's queues, and a stream's tail yields between chunks. The broker's `EventLoopWatch`
/// reports a loop that stops turning; `TOCSIN_TASK_EXECUTOR=pool` keeps Swift's own pool, to
/// rule this out when diagnosing a stall.
func runTasksOnEventLoops() {
    guard Environment.get("TOCSIN_TASK_EXECUTOR") != "pool" else { return }
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
}
