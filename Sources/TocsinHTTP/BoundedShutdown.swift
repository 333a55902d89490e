package import Logging
package import ServiceLifecycle

/// Runs `services` as one service whose graceful shutdown takes at most `grace`: then whatever
/// still runs (a connection whose peer never reads its close frame, say) is cancelled, which
/// closes it, and after at most `grace` more the group ends regardless. Services stop in reverse
/// order, as in any `ServiceGroup`.
package func boundedShutdown(_ services: [any Service], grace: Duration, logger: Logger) -> any Service {
    var configuration = ServiceGroupConfiguration(services: services, logger: logger)
    configuration.maximumGracefulShutdownDuration = grace
    configuration.maximumCancellationDuration = grace
    return ServiceGroup(configuration: configuration)
}
