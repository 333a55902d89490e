#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Foundation
import TocsinHTTP

enum Environment {
    static func get(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

func fflushStdout() { fflush(nil) }

/// Where the server commands run Swift tasks (`TOCSIN_TASK_EXECUTOR`): on Swift's own pool
/// (`pool`, the default), or on the event loops (`event-loops`), by making SwiftNIO's shared
/// group (`MultiThreadedEventLoopGroup.singleton`, which the HTTP server and client use) Swift's
/// global executor. Call it on the main thread, before any task has started (`Tocsin.main`).
///
/// On the event loops a connection's task resumes on the thread that read its frame and writes
/// without a hop back: at 500 events/s to 100 subscribers that is ~2 context switches and ~6% of
/// the CPU per delivery less on the 2-core test machine. But one connection's publishes are then
/// read, parsed and handled on one thread, and pipelined publishing fell 15-20% (21,000 against
/// 26,000 events/s on one connection); with large fan-outs the two do the same. Hence the choice,
/// measured in docs/performance.md. On the loops, a task that blocks its thread blocks that
/// loop's connections; the broker's `EventLoopWatch` reports a loop that stops turning.
enum TaskExecutorChoice: String {
    case pool
    case eventLoops = "event-loops"

    /// Reads `TOCSIN_TASK_EXECUTOR`; an unknown value is an error, not a silent default.
    static func fromEnvironment() throws -> TaskExecutorChoice {
        guard let text = Environment.get("TOCSIN_TASK_EXECUTOR") else { return .pool }
        guard let choice = TaskExecutorChoice(rawValue: text) else {
            throw ValidationError("TOCSIN_TASK_EXECUTOR must be 'pool' or 'event-loops', got '\(text)'")
        }
        return choice
    }

    func install() {
        if self == .eventLoops {
            EventLoopExecutor.install()
        }
    }
}

/// A line on standard error.
func stderr(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
