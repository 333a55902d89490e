import Logging
import TocsinClient
import TocsinCore
import TocsinStore
import TocsinTesting

let testLogger: Logger = {
    var l = Logger(label: "test-client")
    l.logLevel = .warning
    return l
}()

func emergency(_ kind: String, severity: Int64, lat: Double = 52.37, lon: Double = 4.89, area: String = "Amsterdam") -> JSONValue {
    .object([
        "kind": .string(kind), "severity": .int(severity), "location": .object(["lat": .double(lat), "lon": .double(lon)]),
        "area": .string(area), "time": .string(TimeFormat.format(WallClock.nowMillis())),
    ])
}

/// Opens a connection to the test broker, says hello as `client`, and runs `body`.
func connect<T: Sendable>(
    _ broker: TestBroker, client: String, _ body: @escaping @Sendable (Connection, Inbox, Connection.Welcome) async throws -> T
) async throws -> T {
    try await Connection.run(url: broker.webSocketURL, logger: testLogger) { connection in
        let inbox = Inbox(connection)
        let welcome = try await connection.hello(client: client)
        return try await body(connection, inbox, welcome)
    }
}

extension ServerMessage.Notification {
    /// The event object of a push notification.
    var event: JSONValue? {
        if case .event(let json) = self { return try? JSONValue.parse(json) }
        return nil
    }
}
