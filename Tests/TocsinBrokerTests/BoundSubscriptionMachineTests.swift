import Testing
import TocsinCore
import TocsinStore

@testable import TocsinBroker

/// Subscriptions that follow their subscriber (`StateMachine.rebind`), against brute force: a
/// subscription that moves receives exactly the events a fresh subscription at each of its
/// locations would have received from the moment of each move — no gap, no duplicate — while
/// others share and leave its interests.
@Suite struct BoundSubscriptionMachineTests {
    typealias Machine = StreamDispatch.StateMachine<String>

    static let schema = try! StreamDefinition(
        name: "s", json: ["fields": [["name": "location", "type": "geo"], ["name": "severity", "type": "int"]]]
    ).schema
    static let near = try! ChannelCompiler.compile(
        ChannelDefinition(
            name: "Near", stream: "s",
            params: [ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double)],
            whereClause: "distance(location, point($lat, $lon)) <= 3 && severity >= 2"),
        schema: schema)

    @Test(arguments: 0..<30)
    func aMovingSubscriptionGetsWhatAFreshOneAtEachPlaceWould(seed: Int) {
        var rng = SplitMix(seed: UInt64(seed) &* 104_729 &+ 7)
        // A city of 20 km; places on a grid so interests are often shared.
        func place() -> (Double, Double) {
            (52.30 + Double(Int.random(in: 0..<8, using: &rng)) * 0.02, 4.80 + Double(Int.random(in: 0..<8, using: &rng)) * 0.03)
        }
        var m = Machine(stream: "s", epoch: "e", position: 0, schema: Self.schema)
        let ids = (0..<6).map { "s\($0)" }
        var at: [String: (Double, Double)] = [:]
        for id in ids {
            let p = place()
            at[id] = p
            _ = m.attach(id, recipient: "c-" + id, channel: Self.near, params: [.double(p.0), .double(p.1)])
            let step = m.goLiveIfCaughtUp(id, recipient: "c-" + id, replayedTo: 0)
            #expect(step == .live)
        }
        var expected: [String: [Int64]] = [:]
        var got: [String: [Int64]] = [:]
        var seq: Int64 = 0
        for _ in 0..<300 {
            if Int.random(in: 0..<3, using: &rng) == 0 {
                let id = ids.randomElement(using: &rng)!
                let p = Bool.random(using: &rng) ? place() : at[ids.randomElement(using: &rng)!]!  // often onto another's interest
                at[id] = p
                let moved = m.rebind(id, recipient: "c-" + id, params: [.double(p.0), .double(p.1)])
                #expect(moved)
                continue
            }
            seq += 1
            let (lat, lon) = (52.30 + Double.random(in: 0...0.16, using: &rng), 4.80 + Double.random(in: 0...0.24, using: &rng))
            let severity = Int.random(in: 0...4, using: &rng)
            let event = StoredEvent(seq: seq, publishedAtMillis: 0, json: #"{"location":{"lat":\#(lat),"lon":\#(lon)},"severity":\#(severity)}"#)
            let point = GeoPoint(lat: lat, lon: lon)
            for id in ids where severity >= 2 && point.distanceKm(to: GeoPoint(lat: at[id]!.0, lon: at[id]!.1)) <= 3 {
                expected[id, default: []].append(seq)
            }
            var actions: [Machine.Action] = []
            _ = m.dispatch([event], nowMillis: 0, into: &actions)
            for case .send(let to, .notify(let prefix, let suffix)) in actions {
                let frame = try! JSONValue.parse(prefix + suffix)
                #expect(to == "c-" + (frame["subscription"]?.stringValue ?? "?"))
                got[frame["subscription"]!.stringValue!, default: []].append(frame["seq"]!.intValue!)
            }
        }
        #expect(got == expected, "seed \(seed)")
        let stranger = m.rebind("s0", recipient: "someone else", params: [.double(0), .double(0)])
        #expect(!stranger, "only the current attachment moves")
        // Leaving every interest empties the index: nothing is left behind by the moves.
        for id in ids { _ = m.detach(id) }
        #expect(m.channels.isEmpty)
    }
}
