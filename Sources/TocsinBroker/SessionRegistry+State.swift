extension SessionRegistry {
    /// Which sessions are open, which said hello, and which were told to migrate: the pure part
    /// of `SessionRegistry`. It holds session ids and times, nothing else; the registry keeps
    /// the `Session` objects and carries out what this decides (send `migrate`, close) after
    /// releasing its lock. Time is the registry's clock, passed in (`now`), as elapsed time
    /// since an origin, so tests use literal durations.
    struct State: Sendable, Equatable {
        struct Entry: Sendable, Equatable {
            /// Said hello: only identified clients can migrate (a bare publisher connection cannot).
            var identified = false
            /// Told to migrate, at this time; until it leaves it is not counted as load.
            var migratingSince: Duration?
            /// Closed for not migrating in time; reported once.
            var evicted = false
        }

        private(set) var entries: [String: Entry] = [:]

        /// Sessions that said hello (the ones a drain can migrate).
        var identifiedCount: Int { entries.values.count { $0.identified } }
        var count: Int { entries.count }

        mutating func open(_ id: String) {
            entries[id] = Entry()
        }

        mutating func identify(_ id: String) {
            entries[id]?.identified = true
        }

        mutating func close(_ id: String) {
            entries.removeValue(forKey: id)
        }

        /// Picks up to `count` identified sessions not already migrating and marks them as
        /// migrating since `now`. The caller sends each its `migrate` order.
        mutating func startMigration(count: Int, now: Duration) -> [String] {
            guard count > 0 else { return [] }
            var chosen: [String] = []
            for (id, entry) in entries where entry.identified && entry.migratingSince == nil {
                chosen.append(id)
                if chosen.count == count { break }
            }
            for id in chosen { entries[id]!.migratingSince = now }
            return chosen
        }

        /// Sessions told to migrate more than `timeout` before `now` and still here (clients that
        /// ignore `migrate`): each is returned once, for the caller to close. They reconnect
        /// through `assign` like after any lost connection.
        mutating func evictStaleMigrations(olderThan timeout: Duration, now: Duration) -> [String] {
            var stale: [String] = []
            for (id, entry) in entries where !entry.evicted {
                if let since = entry.migratingSince, now - since > timeout { stale.append(id) }
            }
            for id in stale { entries[id]!.evicted = true }
            return stale
        }

        /// Sessions whose subscriptions count as load: those not told to migrate (they are
        /// leaving, and counting them would make the controller order the same move twice).
        var staying: [String] { entries.compactMap { $0.value.migratingSince == nil ? $0.key : nil } }
        var migratingCount: Int { entries.values.count { $0.migratingSince != nil } }
    }
}
