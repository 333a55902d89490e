import Testing

@testable import TocsinCore

/// Shared builders for the cluster tests (namespaced so they cannot clash with other test files' helpers).
enum ClusterFixture {
    static func registration(
        id: String = "b1",
        incarnation: String = "inc-1",
        webSocketURL: String = "ws://b1.example:8080/ws",
        httpURL: String = "http://b1.example:8080",
        region: String = "eu",
        location: GeoPoint? = nil,
        capacity: Int = 1000
    ) -> RegistrationRequest {
        RegistrationRequest(
            id: id,
            incarnation: incarnation,
            webSocketURL: webSocketURL,
            httpURL: httpURL,
            region: region,
            location: location,
            capacity: capacity
        )
    }

    static func broker(
        _ id: String,
        region: String = "eu",
        connections: Int = 0,
        capacity: Int = 1_000_000,
        state: BrokerState = .active,
        location: GeoPoint? = nil
    ) -> BrokerRecord {
        BrokerRecord(
            id: id,
            incarnation: "\(id)-inc",
            webSocketURL: "ws://\(id).example/ws",
            httpURL: "http://\(id).example",
            region: region,
            location: location,
            capacity: capacity,
            state: state,
            load: BrokerLoad(connections: connections)
        )
    }

    static let paris = GeoPoint(lat: 48.857, lon: 2.352)
    static let frankfurt = GeoPoint(lat: 50.110, lon: 8.682)
    static let dublin = GeoPoint(lat: 53.350, lon: -6.260)
    static let newYork = GeoPoint(lat: 40.713, lon: -74.006)
    static let tokyo = GeoPoint(lat: 35.676, lon: 139.650)
    static let singapore = GeoPoint(lat: 1.352, lon: 103.820)

    /// Runs `body` and checks that it throws a `TocsinError` with `code`.
    static func expectError<T>(
        _ code: TocsinError.Code,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws(TocsinError) -> T
    ) {
        do {
            _ = try body()
            Issue.record("expected a \(code) error, but the call succeeded", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == code, "message: \(error.message)", sourceLocation: sourceLocation)
            #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
        }
    }
}
