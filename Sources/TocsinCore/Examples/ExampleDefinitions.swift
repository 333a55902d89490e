/// The ready-to-try example: an `emergencies` stream and channels over it. Defined once here for
/// the broker's `--seed-example` (which creates it in an empty store), the load generators and
/// the tests, which publish and subscribe against it.
public enum ExampleDefinitions {
    /// `kind`, `severity`, `location`, `area`, an optional `description` and `time`; kept a week.
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

    /// The example channel named `name`.
    public static func channel(_ name: String) -> ChannelDefinition? { channels.first { $0.name == name } }

    static func field(_ name: String, _ type: String, optional: Bool = false) -> JSONValue {
        .object(["name": .string(name), "type": .string(type), "optional": .bool(optional)])
    }
}
