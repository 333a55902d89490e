package import Logging
package import ServiceLifecycle

/// Runs `services` as one service whose graceful shutdown takes at most `grace`: then whatever
/// still runs (a connection whose peer never reads its close frame, say) is cancelled, which
/// closes it. A service that does not end within `max(grace, 5 s)` of that cancellation is a bug
/// (something ignores cancellation): ServiceLifecycle then stops the process with a fatal error
/// rather than let it hang. (The floor keeps a short grace on a loaded machine from turning a
/// slow cancellation into a crash.) Services stop in reverse order, as in any `ServiceGroup`.
package func boundedShutdown(_ services: [any Service], grace: Duration, logger: Logger) -> any Service {
    var configuration = ServiceGroupConfiguration(services: services, logger: logger)
    configuration.maximumGracefulShutdownDuration = grace
    configuration.maximumCancellationDuration = max(grace, .seconds(5))
    return ServiceGroup(configuration: configuration)
}
