import Testing
import TocsinCore
import TocsinStore
import TocsinTesting

/// The scenario both stores' batched subscription creations must pass: while the store is held
/// (SQLite: its writer; PostgreSQL: a client's lock, by another broker), one creation is taken
/// and waits, five more queue behind it: four for client c, whose limit is 3, and one for d.
/// Once released: exactly two batches; two of c's four succeed and two are refused with
/// `too_many_subscriptions`, storing nothing; d's succeeds; c holds 3.
enum BatchedCreations {
    static func check(
        _ store: any Store, start: StreamPosition, handling: @escaping @Sendable () -> Int, queued: @escaping @Sendable () -> Int,
        batches: () -> Int, readBack: (any Store)? = nil, release: () async throws -> Void
    ) async throws {
        let before = batches()
        let first = Task { try await store.openSubscription(client: "c", channel: "ch", params: ["n": 0], initial: start, maxPerClient: 3) }
        try await TocsinTesting.waitUntil("the first creation waits") { handling() == 1 }
        let rest = [("c", 1), ("c", 2), ("c", 3), ("c", 4), ("d", 0)].map { client, n in
            Task { try await store.openSubscription(client: client, channel: "ch", params: ["n": .int(Int64(n))], initial: start, maxPerClient: 3) }
        }
        try await TocsinTesting.waitUntil("the other five queue behind it") { queued() == 5 }
        try await release()

        #expect(try await first.value.created)
        var outcomes: [Result<Bool, TocsinError>] = []
        for task in rest {
            do { outcomes.append(.success(try await task.value.created)) } catch let error as TocsinError { outcomes.append(.failure(error)) }
        }
        // In one batch, in whatever order the tasks queued: two more of c's fit its limit of 3,
        // the other two do not; d's does.
        let cs = outcomes.prefix(4)
        #expect(cs.filter { (try? $0.get()) == true }.count == 2)
        #expect(cs.filter { if case .failure(let e) = $0 { e.code == .tooManySubscriptions } else { false } }.count == 2)
        #expect((try? outcomes[4].get()) == true)
        #expect(batches() == before + 2, "the first alone, then the five together")
        let reader = readBack ?? store
        let stored = try await reader.subscriptions(client: "c").map(\.params)
        #expect(stored.count == 3 && stored.contains(["n": 0]))
        #expect(try await reader.subscriptions(client: "d").count == 1)
    }
}
