import MatcherFixtures
import TocsinCore

// A plain timing loop (no benchmark harness): prints ns per event, median and p99 over batches.
// Usage: MatcherProbe [geo|equality] [n] [seconds]
let args = CommandLine.arguments
let kind: Fixtures.Kind = args.count > 1 && args[1] == "equality" ? .equality : .geo
let n = args.count > 2 ? Int(args[2])! : 1_000_000
let seconds = args.count > 3 ? Double(args[3])! : 5
Fixtures.prepare(kind, n)
let fixture = Fixtures.get(kind, n)
var result: [InterestID] = []
result.reserveCapacity(1024)
var samples: [Double] = []
let clock = ContinuousClock()
let deadline = clock.now + .milliseconds(Int(seconds * 1000))
while clock.now < deadline {
    let start = clock.now
    for _ in 0..<16 { fixture.matchNext(into: &result) }
    let elapsed = clock.now - start
    samples.append(Double(elapsed.components.attoseconds) / 1e9 / 16 + Double(elapsed.components.seconds) * 1e9 / 16)
}
samples.sort()
let median = samples[samples.count / 2]
let p99 = samples[samples.count * 99 / 100]
print("\(kind) n=\(n): \(samples.count * 16) events, ns/event (mean of 16) median \(Int(median)), p99 \(Int(p99)); sink \(fixture.sink)")
