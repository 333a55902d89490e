import Testing
import TocsinCore
@testable import TocsinStore

/// `SubscriptionCreations.decide`, which answers a whole batch of new subscriptions at once,
/// against the plainest reference: a list of stored rows and the requests applied to it one
/// after another, as separate transactions would.
@Suite struct SubscriptionCreationsTests {
    private struct Row {
        var client: String
        var channel: String
        var params: String
        var record: SubscriptionRecord
    }

    @Test func aBatchDecidesAsItsRequestsOneAfterAnother() {
        for seed in 0..<2_000 {
            var rng = SplitMix(seed: seed)
            let clients = ["a", "b", "c"], channels = ["x", "y"], start = StreamPosition(epoch: "e1", seq: 7)
            func params(_ n: Int) -> [String: JSONValue] { ["n": .int(Int64(n))] }
            // What the store holds already: some under the batch's keys, some only counting
            // towards their client's limit.
            var rows: [Row] = []
            for i in 0..<Int.random(in: 0...6, using: &rng) {
                let client = clients.randomElement(using: &rng)!, channel = channels.randomElement(using: &rng)!
                let n = Int.random(in: 0...5, using: &rng)
                let text = JSONValue.object(params(n)).serialized
                guard !rows.contains(where: { $0.client == client && $0.channel == channel && $0.params == text }) else { continue }
                let record = SubscriptionRecord(id: "old\(i)", client: client, channel: channel, params: params(n), epoch: "e0", ackedSeq: 3)
                rows.append(Row(client: client, channel: channel, params: text, record: record))
            }
            let requests = (0..<Int.random(in: 1...12, using: &rng)).map { i in
                let n = Int.random(in: 0...3, using: &rng)
                return SubscriptionCreations.Request(
                    client: clients.randomElement(using: &rng)!, channel: channels.randomElement(using: &rng)!, params: params(n),
                    paramsText: JSONValue.object(params(n)).serialized, initial: start,
                    maxPerClient: Bool.random(using: &rng) ? nil : Int.random(in: 0...3, using: &rng), newID: "new\(i)")
            }

            // What the store reads for the batch: rows under its keys, and its clients' counts.
            var stored: [SubscriptionCreations.Key: SubscriptionRecord] = [:]
            var held: [String: Int] = [:]
            for row in rows {
                let key = SubscriptionCreations.Key(client: row.client, channel: row.channel, paramsText: row.params)
                if requests.contains(where: { $0.client == row.client && $0.channel == row.channel && $0.paramsText == row.params }) {
                    stored[key] = row.record
                }
                if requests.contains(where: { $0.client == row.client }) { held[row.client, default: 0] += 1 }
            }
            let decided = SubscriptionCreations.decide(requests, stored: stored, held: held)

            var reference: [SubscriptionCreations.Outcome] = []
            for request in requests {
                if let row = rows.first(where: { $0.client == request.client && $0.channel == request.channel && $0.params == request.paramsText }) {
                    reference.append(.resumed(row.record))
                    continue
                }
                let holds = rows.filter { $0.client == request.client }.count
                if let limit = request.maxPerClient, holds >= limit {
                    reference.append(.refused(held: holds, limit: limit))
                    continue
                }
                let record = SubscriptionRecord(
                    id: request.newID, client: request.client, channel: request.channel, params: request.params, epoch: "e1", ackedSeq: 7)
                rows.append(Row(client: request.client, channel: request.channel, params: request.paramsText, record: record))
                reference.append(.created(record))
            }
            #expect(decided == reference, "seed \(seed)")
        }
    }
}
