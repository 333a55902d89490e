// libFuzzer target: stream definitions and the event validator.
// Input: the first line is the body of `PUT /v1/streams/s`; every further line is an event.
// Properties: never crashes; an accepted event's canonical JSON (what the store keeps) parses and
// validates back to the same record, and its canonical JSON is stable.
import TocsinCore

func fuzzSchema(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let lines = bytes.split(separator: UInt8(ascii: "\n"), maxSplits: 16, omittingEmptySubsequences: false)
    guard let first = lines.first, let body = try? JSONValue.parse(first) else { return 0 }
    let definition: StreamDefinition
    do {
        definition = try StreamDefinition(name: "s", json: body)
    } catch {
        precondition(error.code == .invalidStream, "definition refused with \(error.code), not invalid_stream")
        return 0
    }
    let schema = definition.schema
    for line in lines.dropFirst() {
        guard let event = try? JSONValue.parse(line) else { continue }
        let record: Record
        do {
            record = try schema.record(from: event)
        } catch {
            precondition(error.code == .schemaViolation, "event refused with \(error.code), not schema_violation")
            continue
        }
        let stored = schema.json(of: record)
        guard let reparsed = try? JSONValue.parse(stored) else {
            fatalError("canonical JSON does not parse: \(stored.prefix(300))")
        }
        let again: Record
        do {
            again = try schema.record(from: reparsed)
        } catch {
            fatalError("canonical JSON is refused: \(error) for \(stored.prefix(300))")
        }
        precondition(again == record, "canonical JSON validates to another record: \(stored.prefix(300))")
        precondition(schema.json(of: again) == stored, "canonical JSON is not stable: \(stored.prefix(300))")
    }
    return 0
}
