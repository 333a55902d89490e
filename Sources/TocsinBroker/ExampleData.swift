import TocsinCore
import TocsinStore

/// The ready-to-try example created in an empty store: an `emergencies` stream and channels over it.
public enum ExampleData {
    public static let emergencies = try! StreamDefinition(
        name: "emergencies",
        json: .object([
            "fields": .array([
                field("kind", "string"), field("severity", "int"), field("location", "geo"), field("area", "string"),
                field("description", "string", optional: true), field("time", "time"),
            ]),
            "retention": .object(["maxAgeSeconds": .int(7 * 86_400)]),
        ]))

    public static let channels: [ChannelDefinition] = [
        ChannelDefinition(
            name: "EmergenciesNearMe", stream: "emergencies",
            params: [
                ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
                ChannelParameter(name: "radiusKm", type: .double),
                ChannelParameter(name: "minSeverity", type: .int, default: .int(1)),
            ],
            whereClause: "distance(location, point($lat, $lon)) <= $radiusKm && severity >= $minSeverity"),
        ChannelDefinition(
            name: "EmergenciesOfKind", stream: "emergencies", params: [ChannelParameter(name: "kind", type: .string)],
            whereClause: "kind == $kind"),
        ChannelDefinition(
            name: "SevereInArea", stream: "emergencies",
            params: [ChannelParameter(name: "area", type: .string), ChannelParameter(name: "minSeverity", type: .int, default: .int(4))],
            whereClause: "area == $area && severity >= $minSeverity"),
        ChannelDefinition(
            name: "AreaDigest", stream: "emergencies", params: [ChannelParameter(name: "area", type: .string)],
            whereClause: "area == $area", mode: .repetitive(periodMillis: 10_000), delivery: .push),
        ChannelDefinition(
            name: "RecentNearMeCount", stream: "emergencies",
            params: [
                ChannelParameter(name: "lat", type: .double), ChannelParameter(name: "lon", type: .double),
                ChannelParameter(name: "radiusKm", type: .double),
            ],
            whereClause: "distance(location, point($lat, $lon)) <= $radiusKm && time >= now() - 1h", delivery: .notify),
    ]

    static func field(_ name: String, _ type: String, optional: Bool = false) -> JSONValue {
        .object(["name": .string(name), "type": .string(type), "optional": .bool(optional)])
    }

    /// Creates the example if the store has no streams at all.
    public static func seed(_ store: any Store) async throws {
        guard try await store.streams().isEmpty else { return }
        let (info, _) = try await store.putStream(emergencies, recreate: false)
        for channel in channels {
            _ = try ChannelCompiler.compile(channel, schema: info.definition.schema)
            _ = try await store.putChannel(channel)
        }
    }
}
