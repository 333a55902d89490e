import Testing
import TocsinCore

/// The latency buckets against the exact percentiles of the same values.
@Suite struct LatencyWindowTests {
    @Test(arguments: 0..<25) func percentilesFallInTheBucketOfTheExactOnes(seed: UInt64) {
        var rng = SplitMix(seed: seed)
        var window = LatencyWindow()
        var values: [Double] = []
        let n = 1 + Int(rng.next() % 2000)
        for _ in 0..<n {
            // Mostly small, some very large.
            let v = Double(rng.next() % 1000) / 10 * (rng.next() % 20 == 0 ? 200 : 1)
            values.append(v)
            window.record(v)
        }
        values.sort()
        #expect(window.count == n)
        for p in [0.5, 0.9, 0.99, 1.0] {
            let exact = values[max(0, Int((p * Double(n)).rounded(.up)) - 1)]
            let reported = try! #require(window.percentile(p))
            // Never below the exact value, and no further above it than its bucket's bound (or the largest seen).
            #expect(reported >= exact)
            let bound = LatencyWindow.bounds.first { exact <= $0 } ?? values.last!
            #expect(reported <= max(bound, exact))
        }
    }

    @Test func emptyMergedAndCarriedInALoadReport() throws {
        var a = LatencyWindow()
        #expect(a.percentile(0.5) == nil)
        var b = LatencyWindow()
        b.record(4, times: 10)
        a.record(40)
        a.merge(b)
        #expect(a.count == 11)
        #expect(a.percentile(0.5) == 5)
        #expect(a.percentile(1) == 40)
        var load = BrokerLoad(connections: 3)
        load.latencyP50Millis = 5
        load.latencyP99Millis = 40
        #expect(try BrokerLoad(json: try JSONValue.parse(load.json.serialized)) == load)
        #expect(throws: TocsinError.self) { try BrokerLoad(json: try JSONValue.parse(#"{"latencyP99Millis": -1}"#)) }
    }
}
