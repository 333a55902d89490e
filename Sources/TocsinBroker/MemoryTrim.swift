#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Hands memory the broker freed back to the system. glibc's malloc keeps freed memory for
/// reuse, and only at the top of its heaps: after a reconnect storm (thousands of connections
/// saying hello at once, each briefly holding a task's stack and its store reads) a few KiB per
/// connection stay resident although nothing uses them. `malloc_trim` releases the free pages
/// inside the heaps too. It runs on a pool thread every `memoryTrimInterval` (10 s), and costs
/// about as long as walking the free lists (docs/performance.md, "Memory per connection").
enum MemoryTrim {
    /// glibc's `malloc_trim` (its header is not in Swift's Glibc module); nil on other C libraries.
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        #else
        return nil
        #endif
    }()

    static func run(logger: Logger) {
        guard let mallocTrim else { return }
        let start = ContinuousClock.now
        let released = mallocTrim(0) != 0
        let took = ContinuousClock.now - start
        if took > .milliseconds(20) {
            logger.info("returning freed memory to the system took long", metadata: ["ms": "\(took.milliseconds)"])
        } else {
            logger.trace("returned freed memory to the system", metadata: ["released": "\(released)", "µs": "\(took.nanoseconds / 1000)"])
        }
    }
}
