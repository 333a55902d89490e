import Logging
import TocsinCore
import TocsinStore

let testLogger: Logger = {
    var l = Logger(label: "test-client")
    l.logLevel = .warning
    return l
}()

/// An event of the example `emergencies` stream.
func emergency(_ kind: String, severity: Int64) -> JSONValue {
    .object([
        "kind": .string(kind), "severity": .int(severity), "location": .object(["lat": .double(52.37), "lon": .double(4.89)]),
        "area": .string("Amsterdam"), "time": .string(TimeFormat.format(WallClock.nowMillis())),
    ])
}
