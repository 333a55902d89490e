import Logging
import PostgresNIO
import Synchronization
public import ServiceLifecycle
import TocsinCore

/// Following what other processes commit. `LISTEN tocsin_changes` on a connection of its own
/// wakes the follower at once; the follower then reads every stream's `last_seq` and the catalog
/// version, and wakes tails and reloads definitions from what it read. It also reads them every
/// `pollInterval` without a wake-up, so a notification lost (the listener reconnecting, the
/// server restarting) delays nothing by more than one poll.
extension PostgresStore {
    public func maintenanceServices() -> [any Service] {
        let (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        return [
            StoreTask("postgres listener") { [self] in await listen(wake) },
            StoreTask("postgres follower") { [self] in await follow(wakeups) },
        ]
    }

    private func listen(_ wake: AsyncStream<Void>.Continuation) async {
        var failures = 0
        let own = committer.notificationPayload
        while !Task.isCancelled {
            let connected = Atomic<Bool>(false)
            do {
                try await connections.listen(channel: "tocsin_changes") { notifications in
                    connected.store(true, ordering: .relaxed)
                    // What was committed while the listener was away.
                    wake.yield()
                    // Not for this store's own appends: its tails heard of them at the commit.
                    for try await notification in notifications where notification.payload != own { wake.yield() }
                }
            } catch {
                if Task.isCancelled { break }
                if connected.load(ordering: .relaxed) { failures = 0 }
                failures += 1
                if failures == 1 || failures % 60 == 0 {
                    logger.warning(
                        "the store's change listener lost its connection; polling until it is back",
                        metadata: ["error": "\(TocsinError.fromPostgres(error))"])
                }
            }
            try? await Task.sleep(for: .milliseconds(min(200 * failures, 2000)))
        }
        wake.finish()
    }

    private func follow(_ wakeups: AsyncStream<Void>) async {
        var failures = 0
        let interval = pollInterval
        let logger = logger
        await withTaskGroup(of: Void.self) { group in
            // The poll: a wake-up every interval, beside the listener's.
            let (ticks, tick) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    tick.yield()
                }
                tick.finish()
            }
            group.addTask {
                for await _ in wakeups { tick.yield() }
            }
            for await _ in ticks {
                // What this process knew to be committed before the read: the read must find
                // at least as much, or the database lost commits (`reportLostCommits`).
                let known = changes.positions
                do {
                    let (streams, version) = try await read { db in
                        var streams: [(String, String, Int64)] = []
                        for try await row in try await db.query("SELECT name, epoch, last_seq FROM streams", logger: logger)
                            .decode((String, String, Int64).self)
                        { streams.append(row) }
                        return (streams, try await Self.catalogVersion(db, logger: logger))
                    }
                    failures = 0
                    for (name, epoch, lastSeq) in streams {
                        if let seen = known[name], seen.epoch == epoch, lastSeq < seen.seq {
                            reportLostCommits(stream: name, epoch: epoch, stored: lastSeq, seen: seen.seq)
                        }
                        changes.advance(stream: name, epoch: epoch, to: lastSeq)
                    }
                    let changed = catalogVersion.withLock { seen in
                        defer { seen = version }
                        return seen != version
                    }
                    if changed { changes.definitionsChanged() }
                } catch {
                    failures += 1
                    if failures == 1 || failures % 60 == 0 {
                        logger.warning("the store's follower cannot read the database", metadata: ["error": "\(error)", "failures": "\(failures)"])
                    }
                }
                if Task.isCancelled { break }
            }
            group.cancelAll()
        }
    }

    /// The database holds less of a stream than this process saw committed, in the same epoch:
    /// commits were lost (a failover to an asynchronous standby, `synchronous_commit=off` and a
    /// crash, a restore from a backup). The seqs they had will be given to other events, which
    /// brokers and subscribers that had the lost ones take for duplicates; nothing here can
    /// mend that, so it is said loudly and counted (`tocsin_store_lost_commits_total`), once
    /// per stream and position.
    func reportLostCommits(stream: String, epoch: String, stored: Int64, seen: Int64) {
        guard reportedLost.withLock({ $0.insert("\(stream)\u{0}\(epoch)\u{0}\(seen)").inserted }) else { return }
        lostCommits.add(1, ordering: .relaxed)
        lostCommitsMetric.increment()
        logger.critical(
            "the database lost commits this process saw: their seqs will be given to other events, which subscribers that had the lost ones will not receive. Was it restored from a backup, or failed over to a standby that was not synchronous, or run with synchronous_commit off? Recreate the stream (PUT with ?recreate=true) to start a new epoch; see operations.md, Durability",
            metadata: ["stream": "\(stream)", "epoch": "\(epoch)", "storedLastSeq": "\(stored)", "seenLastSeq": "\(seen)"])
    }
}
