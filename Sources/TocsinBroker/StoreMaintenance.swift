import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TocsinStore

/// The store's upkeep while the broker runs: the usage gauges, and for SQLite the checkpoints and
/// the poll that notices other processes' commits and definition changes.
enum StoreMaintenance {
    static func services(for broker: Broker) -> [any Service] {
        let metrics = broker.metrics
        var services: [any Service] = []
        if let sqlite = broker.store as? SQLiteStore {
            var gauges = PeriodicService(name: "store gauges", interval: broker.configuration.storeGaugeInterval) {
                if let usage = try? await sqlite.usage() {
                    metrics.storeUsedBytes.record(usage.usedBytes)
                    metrics.storeMaxBytes.record(usage.maxBytes ?? 0)
                }
            }
            gauges.atStart = true
            services.append(gauges)
            let every = broker.configuration.checkpointInterval
            services.append(ScopedService { await sqlite.runCheckpoints(every: every) })
            if let interval = broker.configuration.storePollInterval {
                services.append(ScopedService { await runStorePoller(sqlite, interval: interval, broker: broker) })
            }
        }
        return services
    }

    /// Another process sharing the SQLite file appends events and defines streams and channels:
    /// wake the tails on new events every poll, and reload the catalog when definitions change.
    ///
    /// The poll runs on a thread of its own (a blocking sleep and one `PRAGMA data_version`):
    /// waking an async task every 2 ms costs several times more CPU in timer and thread hops.
    private static func runStorePoller(_ store: SQLiteStore, interval: Duration, broker: Broker) async {
        let (catalogChanges, catalogChanged) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let stop = Atomic<Bool>(false)
        let micros = UInt32(clamping: interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000)
        let logger = broker.logger
        Thread.detachNewThread {
            var catalogVersion = (try? store.catalogVersion()) ?? ""
            var lastCatalogCheck = ContinuousClock.now
            var fileChanged = false
            while !stop.load(ordering: .relaxed) {
                usleep(micros)
                do {
                    if try store.refreshChanges() { fileChanged = true }
                    // Definitions change rarely: look at most every 500 ms, and only if the file changed.
                    if fileChanged, ContinuousClock.now - lastCatalogCheck >= .milliseconds(500) {
                        lastCatalogCheck = .now
                        let version = try store.catalogVersion()
                        fileChanged = false
                        if version != catalogVersion {
                            catalogVersion = version
                            catalogChanged.yield()
                        }
                    }
                } catch {
                    logger.warning("store poll failed", metadata: ["error": "\(error)"])
                }
            }
            catalogChanged.finish()
        }
        await withTaskCancellationHandler {
            for await _ in catalogChanges {
                do {
                    try await broker.reloadCatalog()
                    logger.info("definitions changed in the shared store; catalog reloaded")
                } catch {
                    logger.warning("could not reload the catalog", metadata: ["error": "\(error)"])
                }
            }
        } onCancel: {
            stop.store(true, ordering: .relaxed)
        }
    }
}

/// A loop that runs until its task is cancelled, as a service that stops at graceful shutdown.
struct ScopedService: Service {
    let body: @Sendable () async -> Void

    init(_ body: @escaping @Sendable () async -> Void) {
        self.body = body
    }

    func run() async {
        await cancelWhenGracefulShutdown { await body() }
    }
}
