import Synchronization

/// Tells waiters when a stream's last seq moves past what they have seen.
///
/// Appends in this process call `advance` directly after their commit; a poller may call it
/// for appends made by other processes sharing the store. It is only a wake-up: readers always
/// read the store, which is the truth.
public final class ChangeFeed: Sendable {
    private struct State {
        var lastSeq: [String: Int64] = [:]
        var waiters: [String: [(id: Int, after: Int64, continuation: CheckedContinuation<Void, Never>)]] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Records that `stream` now ends at `seq` and wakes whoever waits for less.
    /// A lower seq with a new epoch (recreated stream) also wakes everyone.
    public func advance(stream: String, to seq: Int64, reset: Bool = false) {
        let woken: [CheckedContinuation<Void, Never>] = state.withLock { s in
            let known = s.lastSeq[stream] ?? 0
            guard seq > known || reset else { return [] }
            s.lastSeq[stream] = seq
            guard let list = s.waiters[stream], !list.isEmpty else { return [] }
            var keep: [(id: Int, after: Int64, continuation: CheckedContinuation<Void, Never>)] = []
            var wake: [CheckedContinuation<Void, Never>] = []
            for w in list {
                if seq > w.after || reset { wake.append(w.continuation) } else { keep.append(w) }
            }
            s.waiters[stream] = keep
            return wake
        }
        for c in woken { c.resume() }
    }

    public func lastSeq(of stream: String) -> Int64 {
        state.withLock { $0.lastSeq[stream] ?? 0 }
    }

    /// Returns once the stream's last seq is beyond `after`, or when the task is cancelled.
    public func wait(stream: String, after: Int64) async {
        let id: Int = state.withLock { s in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if (s.lastSeq[stream] ?? 0) > after || Task.isCancelled { return true }
                    s.waiters[stream, default: []].append((id, after, c))
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
                guard let i = s.waiters[stream]?.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters[stream]!.remove(at: i).continuation
            }
            c?.resume()
        }
    }
}
