// libFuzzer target: the WebSocket frame decoders.
// - ClientMessage.decode (what a broker does with every text frame a client sends): never crashes;
//   a decoded message re-encodes (as the client library sends it) to a frame that decodes to the
//   same message.
// - ServerMessage.decode (what the client library does with every frame a broker sends, with its
//   fast path for notify frames): never crashes.
import TocsinCore

func fuzzWire(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    switch ClientMessage.decode(bytes) {
    case .success(let message):
        let frame = message.encoded
        switch ClientMessage.decode(Array(frame.utf8)) {
        case .success(let again):
            precondition(again == message, "re-encoded frame decodes differently: \(frame.prefix(300))")
        case .failure(let error):
            fatalError("re-encoded frame is refused: \(error) for \(frame.prefix(300))")
        }
    case .failure:
        break
    }
    _ = try? ServerMessage.decode(bytes)
    return 0
}
