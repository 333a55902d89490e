import Logging
import TocsinCore

/// How one of the broker's loops (a stream's tail, a subscription's replay, the catalog reload)
/// waits out a store that cannot be reached: it retries with a growing, jittered delay (up to
/// `backoff.maximum`, so it is back within seconds of the store), logs the first failure and
/// then at most one line per `log.interval` (saying how many it stands for), and says once
/// when the store answers again. Owned by one loop, as a local value.
struct StoreRetry {
    /// What the loop does, for the log ("the tail of a stream").
    let what: String
    var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
    private(set) var failures = 0
    private var log = LogThrottle(interval: .seconds(30))

    init(_ what: String) {
        self.what = what
    }

    /// Whether an error is one to wait out: the store out of reach, not a refusal.
    static func isOutage(_ error: any Error) -> Bool {
        (error as? TocsinError)?.code == .storeUnavailable
    }

    /// After a failure: logs it (throttled), then waits the next delay (less if cancelled).
    mutating func failed(_ error: any Error, logger: Logger, metadata: Logger.Metadata = [:]) async {
        failures += 1
        if let times = log.occurred() {
            var metadata = metadata
            metadata["error"] = "\(error)"
            metadata["failures"] = "\(times)"
            logger.warning("\(what) cannot read the store; retrying until it answers", metadata: metadata)
        }
        try? await Task.sleep(for: backoff.delay(attempt: failures - 1))
    }

    /// After a success: says the store answers again, if it had failed.
    mutating func succeeded(logger: Logger, metadata: Logger.Metadata = [:]) {
        guard failures > 0 else { return }
        var metadata = metadata
        metadata["failures"] = "\(failures)"
        logger.info("\(what) reads the store again", metadata: metadata)
        failures = 0
        log = LogThrottle(interval: log.interval)
    }
}
