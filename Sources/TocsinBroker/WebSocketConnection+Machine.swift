import NIOCore
import NIOWebSocket

/// RFC 6455 for one server-side connection, as a state machine: frames in, actions out. It
/// assembles fragmented messages (up to `maxMessageBytes`), checks text is UTF-8, answers pings,
/// follows the closing handshake and decides keepalive pings. It does no I/O and knows no clock;
/// `WebSocketConnection` feeds it and carries out what it returns, on the channel's event loop.
///
/// NIO's frame decoder (before it in the pipeline) refuses frames over the size limit (1009)
/// and fragmented or oversized control frames (1002): `decoderFailed`.
struct WebSocketConnectionMachine {
    enum Message: Equatable {
        case text(String)
        /// Tocsin speaks JSON text; a binary message is answered with an error, its bytes unread.
        case binary
    }

    enum Action: Equatable {
        case none
        case deliver(Message)
        case pong(ByteBuffer)
        /// Send a close frame with this code and reason, then close the connection once it is
        /// written (or after the grace, if the peer does not read it).
        case close(WebSocketErrorCode, reason: String)
    }

    enum PingAction: Equatable {
        case none
        case ping
        /// Nothing came from the peer since the last ping, a whole period ago.
        case close(WebSocketErrorCode, reason: String)
    }

    private enum State {
        case open
        /// A close frame went out; the connection closes once it is written.
        case closing
    }

    private var state = State.open
    /// The message being assembled from fragments, and whether it is text.
    private var fragments: ByteBuffer?
    private var fragmentsAreText = false
    /// Anything arrived since the last keepalive ping.
    private var heardSincePing = true
    /// The keepalive's first turn passed. It comes anywhere within a period of the upgrade
    /// (`KeepaliveSweep`), so it only arms: a fresh connection is not pinged at once, and the
    /// first ping comes one to two periods after the upgrade.
    private var keepaliveArmed = false
    let maxMessageBytes: Int

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    var isOpen: Bool { if case .open = state { true } else { false } }

    mutating func received(_ frame: WebSocketFrame) -> Action {
        guard case .open = state else { return .none }  // closing: RFC 6455 §5.5.1 lets us discard
        heardSincePing = true
        // RFC 6455 §5.1: a server must close on a client frame that is not masked.
        guard frame.maskKey != nil else { return fail(.protocolError, "client frames must be masked") }
        guard frame.reservedBits.isEmpty else { return fail(.protocolError, "reserved bits set, and no extension was negotiated") }
        switch frame.opcode {
        case .ping:
            return .pong(frame.unmaskedData)
        case .pong:
            return .none
        case .connectionClose:
            state = .closing
            return .close(Self.replyCode(toClose: frame.unmaskedData), reason: "")
        case .text, .binary:
            guard fragments == nil else { return fail(.protocolError, "a new message began before the last one ended") }
            if frame.fin { return deliver(frame.unmaskedData, text: frame.opcode == .text) }
            fragments = frame.unmaskedData
            fragmentsAreText = frame.opcode == .text
            return .none
        case .continuation:
            guard var assembled = fragments else { return fail(.protocolError, "a continuation frame without a message to continue") }
            fragments = nil  // no copy-on-write while appending
            var data = frame.unmaskedData
            guard assembled.readableBytes + data.readableBytes <= maxMessageBytes else {
                return fail(.messageTooLarge, "a message may be at most \(maxMessageBytes) bytes")
            }
            assembled.writeBuffer(&data)
            if frame.fin { return deliver(assembled, text: fragmentsAreText) }
            fragments = assembled
            return .none
        default:
            return fail(.protocolError, "unknown opcode")
        }
    }

    /// NIO's frame decoder refused the bytes: close with the code its error carries.
    mutating func decoderFailed(_ error: NIOWebSocketError) -> Action {
        guard case .open = state else { return .none }
        switch error {
        case .invalidFrameLength: return fail(.messageTooLarge, "a frame may be at most \(maxMessageBytes) bytes")
        case .fragmentedControlFrame: return fail(.protocolError, "a control frame may not be fragmented")
        case .multiByteControlFrameLength: return fail(.protocolError, "a control frame may carry at most 125 bytes")
        }
    }

    /// The keepalive period passed: ping, or close a peer silent for a whole period.
    mutating func pingDue() -> PingAction {
        guard case .open = state else { return .none }
        guard keepaliveArmed else {
            keepaliveArmed = true
            return .none
        }
        guard heardSincePing else {
            state = .closing
            return .close(.goingAway, reason: "ping timeout")
        }
        heardSincePing = false
        return .ping
    }

    /// A close frame went out (the session's drain, shutdown): nothing more is delivered.
    mutating func closeSent() {
        state = .closing
    }

    private mutating func deliver(_ data: ByteBuffer, text: Bool) -> Action {
        guard text else { return .deliver(.binary) }
        guard let string = String(validating: data.readableBytesView, as: UTF8.self) else {
            return fail(.dataInconsistentWithMessage, "text must be UTF-8")
        }
        return .deliver(.text(string))
    }

    private mutating func fail(_ code: WebSocketErrorCode, _ reason: String) -> Action {
        state = .closing
        fragments = nil
        return .close(code, reason: reason)
    }

    /// The code a peer's close frame is answered with (RFC 6455 §5.5.1, §7.4): 1000, or 1002
    /// for a malformed one (one byte, a code no endpoint may send, a reason not in UTF-8).
    static func replyCode(toClose payload: ByteBuffer) -> WebSocketErrorCode {
        var payload = payload
        guard payload.readableBytes > 0 else { return .normalClosure }
        guard let code = payload.readInteger(as: UInt16.self) else { return .protocolError }
        let valid =
            switch code {
            case 1000...1003, 1007...1011: true
            case 3000...4999: true
            default: false
            }
        guard valid, String(validating: payload.readableBytesView, as: UTF8.self) != nil else { return .protocolError }
        return .normalClosure
    }
}
