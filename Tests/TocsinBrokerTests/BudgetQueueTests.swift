import PropertyBased
import Testing

@testable import TocsinBroker

/// `BudgetQueue` (the broker-wide publish budget's bookkeeping) under random requests and
/// releases, against what it promises: what is held adds up, stays within the capacity (or is
/// one request alone), waiters are let in in arrival order and nobody overtakes a waiter, and
/// it never leaves a waiter waiting that fits.
@Suite struct BudgetQueueTests {
    @Test func randomRequestsAndReleasesKeepEveryPromise() async {
        await propertyCheck(count: 300, input: Gen.int(in: 0...999).array(of: 1...80)) { ops in
            let capacity = 100
            var queue = BudgetQueue<Int>(capacity: capacity)
            var held: [Int: Int] = [:]  // request number -> bytes
            var waiting: [(id: Int, bytes: Int)] = []  // the model's own arrival order
            var next = 0
            for op in ops {
                if op < 600 || held.isEmpty {
                    let bytes = op % 150 + 1  // some larger than the whole capacity
                    next += 1
                    let othersWaiting = !waiting.isEmpty
                    if queue.request(bytes, next) {
                        #expect(!othersWaiting, "admitted past a waiter")
                        held[next] = bytes
                    } else {
                        waiting.append((next, bytes))
                    }
                } else {
                    let id = held.keys.sorted()[op % held.count]
                    let admitted = queue.release(held.removeValue(forKey: id)!)
                    #expect(admitted == Array(waiting.prefix(admitted.count).map(\.id)), "admitted in arrival order")
                    for w in waiting.prefix(admitted.count) { held[w.id] = w.bytes }
                    waiting.removeFirst(admitted.count)
                }
                #expect(queue.used == held.values.reduce(0, +), "what is held adds up")
                #expect(queue.used <= capacity || held.count == 1, "within capacity, or one request alone")
                #expect(queue.waiting.map(\.waiter) == waiting.map(\.id))
                if let first = waiting.first {
                    #expect(queue.used > 0 && queue.used + first.bytes > capacity, "a waiter that fits was left waiting")
                }
            }
        }
    }
}
