public import TocsinCore

/// What the controllers share through the store when several run (`tocsin controller --store`):
/// the leadership lease with its fencing epoch, the broker registry the leader writes for the
/// followers (and for the next leader), the operations document (live configuration and
/// commands), and the registry of controllers. `PostgresLedger` is the one implementation; a
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

    /// Writes the operations document (live configuration and commands, `ControlPlane.json`)
    /// at `revision`, if `holder` still holds the lease with `epoch`; false when it does not.
    func saveControl(_ document: String, revision: Int64, holder: String, epoch: Int64) async throws -> Bool

    /// The operations document and its revision, when the revision is above `revision`; nil otherwise.
    func loadControl(newerThan revision: Int64) async throws -> (document: String, revision: Int64)?

    /// Registers (or refreshes) a controller in the registry of controllers until `lease` from
    /// now on the database's clock.
    func refreshController(_ me: ComponentSummary, lease: Duration) async throws

    /// Every controller whose registration has not run out.
    func controllers() async throws -> [ComponentSummary]

    /// Closes the connections.
    func close() async
}
