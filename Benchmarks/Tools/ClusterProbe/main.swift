import TocsinCore
import TocsinLoad

// The controller's decisions, timed one call at a time (no harness), in a release build:
//   swift build -c release --package-path Benchmarks --product ClusterProbe
//   Benchmarks/.build/release/ClusterProbe [brokers] [clients]
// assign: a fresh client id each call, with noteAssigned (what GET /v1/assign does under the lock).
// plan: the rebalancer over a network that just gained a broker.

func nanos() -> Int64 { Monotonic.nanos() }

func summary(_ samples: [Int64]) -> String {
    let d = LatencyDistribution(samples)
    func at(_ q: Double) -> Int64 { d.at(q) ?? 0 }
    return "median \(at(0.5)) ns, p99 \(at(0.99)) ns, p99.9 \(at(0.999)) ns, max \(d.sorted.last ?? 0) ns (\(d.count) calls)"
}

func brokers(_ n: Int, regions: Int) -> [BrokerRecord] {
    (0..<n).map { i in
        BrokerRecord(
            id: "broker-\(i + 1)", incarnation: "i\(i)", webSocketURL: "ws://10.0.0.\(i + 1):7400/v1/ws",
            httpURL: "http://10.0.0.\(i + 1):7400", region: "r\(i % regions)",
            location: GeoPoint(lat: 40 + Double(i % regions) * 3, lon: -3 + Double(i % regions) * 5), capacity: 100_000)
    }
}

let arguments = CommandLine.arguments
let n = arguments.count > 1 ? Int(arguments[1]) ?? 10 : 10
let clients = arguments.count > 2 ? Int(arguments[2]) ?? 100_000 : 100_000

for (label, regions, request) in [
    ("one region, no hints", 1, { (i: Int) in AssignmentRequest(clientID: "client-\(i)") }),
    ("3 regions, by location", 3, { (i: Int) in AssignmentRequest(clientID: "client-\(i)", location: GeoPoint(lat: 45, lon: 4)) }),
] {
    let buildStart = nanos()
    var placement = Placement(brokers: brokers(n, regions: regions))
    let build = nanos() - buildStart
    var samples: [Int64] = []
    samples.reserveCapacity(clients)
    for i in 0..<clients {
        let r = request(i)
        let start = nanos()
        let a = try placement.assign(r)
        placement.noteAssigned(to: a.broker.id)
        samples.append(nanos() - start)
    }
    print("assign with \(n) brokers, \(label): \(summary(samples)); building the placement took \(build / 1000) µs")
}

var grown = brokers(n, regions: 1)
for i in grown.indices { grown[i].load.connections = i == grown.count - 1 ? 0 : 10_000 }
var planSamples: [Int64] = []
var plan = RebalancePlan()
for _ in 0..<1000 {
    let start = nanos()
    plan = Rebalancer.plan(brokers: grown)
    planSamples.append(nanos() - start)
}
print("rebalance plan, \(n) brokers, one new and empty: \(summary(planSamples)); moves \(plan.totalClients) clients in \(plan.moves.count) moves")
