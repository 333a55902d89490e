import Logging
import Synchronization
import TocsinCore

/// The live settings a broker runs over its startup values (flags, environment, defaults), in
/// two layers: the settings file's (`tocsin serve|broker --config FILE`, reloaded when it
/// changes) and, above it, the controller's live configuration (`tocsin config set`). Every
/// value was checked against `LiveSettings` before it got here.
final class LiveLayers: Sendable {
    struct Layers {
        var file: [String: JSONValue] = [:]
        var controller: [String: JSONValue] = [:]

        var effective: [String: JSONValue] { file.merging(controller) { _, controller in controller } }
    }

    let layers = Mutex(Layers())
}

extension Broker {
    /// Puts the settings file's values in force (under the controller's); an empty set brings
    /// back the startup values for what the controller does not set.
    public func setFileSettings(_ values: [String: JSONValue]) {
        applyLiveSettings { $0.file = values }
    }

    /// The controller's live configuration (`BrokerOperations.apply`).
    func setControllerSettings(_ values: [String: JSONValue]) {
        applyLiveSettings { $0.controller = values }
    }

    /// The values in force over the startup ones, file and controller merged.
    public var liveSettings: [String: JSONValue] { liveLayers.layers.withLock { $0.effective } }

    /// Changes a layer and puts the result in force: each live setting from the layers, every
    /// other one back to its startup value. Under the layers' lock, so two changes at once are
    /// applied in the order made (the rate limits' and log level's locks come after it, never before).
    private func applyLiveSettings(_ change: (inout LiveLayers.Layers) -> Void) {
        liveLayers.layers.withLock { layers in
            change(&layers)
            let v = layers.effective
            var limits = configuration.limits
            func number(_ key: String) -> Double? { v[key]?.doubleValue }
            if let x = number("limits.publishEventsPerSecond") { limits.publishEvents.perSecond = x }
            if let x = number("limits.publishEventsBurst") { limits.publishEvents.burst = x }
            if let x = number("limits.subscribesPerSecond") { limits.subscribes.perSecond = x }
            if let x = number("limits.subscribesBurst") { limits.subscribes.burst = x }
            if let x = number("limits.connectionsPerSecond") { limits.connections.perSecond = x }
            if let x = number("limits.connectionsBurst") { limits.connections.burst = x }
            if let x = v["limits.maxConnectionsPerClient"]?.intValue { limits.maxConnectionsPerClient = Int(x) }
            self.limits.retune(limits)
            if let control = configuration.logLevel {
                control.set(v["log.level"]?.stringValue.flatMap(Logger.Level.init(rawValue:)) ?? control.startup)
            }
        }
    }
}
