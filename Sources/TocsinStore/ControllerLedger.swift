public import TocsinCore

/// What the controllers share through the store when several run (`tocsin controller --store`):
/// the leadership lease with its fencing epoch, and the broker registry the leader writes for
/// the followers (and for the next leader). `PostgresLedger` is the one implementation; a
/// controller without a ledger runs alone, in memory.
///
/// Every method is one statement on the database and fails with `store_unavailable` when the
/// database cannot be reached in time.
public protocol ControllerLedger: Sendable {
    /// Takes the lease for `holder` (advertised at `url`) for `lease` on the database's clock if
    /// `holder` holds it or it has run out (the epoch goes up by one when it changes hands),
    /// and returns the lease row as it is after.
    func claimLeadership(holder: String, url: String, lease: Duration) async throws -> LeadershipClaim

    /// Writes the live brokers, if `holder` still holds the lease with `epoch` (a fenced write);
    /// false when it does not (another controller took over).
    func saveRegistry(_ brokers: [BrokerSummary], holder: String, epoch: Int64) async throws -> Bool

    /// The brokers the leader last wrote.
    func loadRegistry() async throws -> [BrokerSummary]

    /// Closes the connections.
    func close() async
}
