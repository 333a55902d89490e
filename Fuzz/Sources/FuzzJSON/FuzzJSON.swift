// libFuzzer target: JSONValue.parse on arbitrary bytes.
// Properties: it never crashes; what it accepts serialises to JSON that parses back to the same
// value and serialises to the same text; the String entry point agrees with the byte one.
import TocsinCore

func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let parsed: JSONValue
    do {
        parsed = try JSONValue.parse(bytes)
    } catch {
        // A bad document is refused with bad_json and nothing else.
        precondition(error.code == .badJSON, "parse threw \(error.code), not bad_json")
        return 0
    }
    let text = parsed.serialized
    let again: JSONValue
    do {
        again = try JSONValue.parse(text)
    } catch {
        fatalError("serialised value does not parse: \(error) in \(text.prefix(200))")
    }
    precondition(again == parsed, "round trip changed the value: \(text.prefix(200))")
    precondition(again.serialized == text, "serialising twice differs: \(text.prefix(200))")
    // Valid UTF-8 text parses alike through the String entry point.
    if let string = String(validating: bytes, as: UTF8.self) {
        precondition((try? JSONValue.parse(string)) == parsed, "String and byte parses disagree")
    }
    return 0
}
