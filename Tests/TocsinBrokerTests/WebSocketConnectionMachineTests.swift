import NIOCore
import NIOWebSocket
import Testing

@testable import TocsinBroker

/// The pure parts of a WebSocket connection: RFC 6455 framing decisions and the inbox that
/// starts and ends the connection's task and holds reading back.
@Suite struct WebSocketConnectionMachineTests {
    /// A client frame: masked (with the all-zero key, so its bytes read as they are).
    static func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8] = [], fin: Bool = true, rsv1: Bool = false, masked: Bool = true) -> WebSocketFrame {
        WebSocketFrame(fin: fin, rsv1: rsv1, opcode: opcode, maskKey: masked ? WebSocketMaskingKey([0, 0, 0, 0]) : nil, data: ByteBuffer(bytes: bytes))
    }

    static func text(_ string: String, fin: Bool = true) -> WebSocketFrame { frame(.text, Array(string.utf8), fin: fin) }

    @Test func wholeAndFragmentedMessagesAreDelivered() {
        var machine = WebSocketConnectionMachine(maxMessageBytes: 100)
        #expect(machine.received(Self.text(#"{"type":"ping"}"#)) == .deliver(.text(#"{"type":"ping"}"#)))
        #expect(machine.received(Self.text("{\"type\":", fin: false)) == .none)
        // Control frames may come between fragments.
        #expect(machine.received(Self.frame(.ping, [1, 2])) == .pong(ByteBuffer(bytes: [1, 2])))
        #expect(machine.received(Self.frame(.continuation, Array("\"pi".utf8), fin: false)) == .none)
        #expect(machine.received(Self.frame(.continuation, Array("ng\"}".utf8))) == .deliver(.text(#"{"type":"ping"}"#)))
        #expect(machine.received(Self.frame(.binary, [0, 1])) == .deliver(.binary))
        #expect(machine.isOpen)
    }

    @Test func aUTF8CharacterSplitAcrossFragmentsIsWhole() {
        var machine = WebSocketConnectionMachine(maxMessageBytes: 100)
        let bytes = Array("é".utf8)
        #expect(machine.received(Self.frame(.text, [bytes[0]], fin: false)) == .none)
        #expect(machine.received(Self.frame(.continuation, [bytes[1]])) == .deliver(.text("é")))
    }

    @Test func protocolViolationsCloseWithTheirCodes() {
        let cases: [(String, [WebSocketFrame], WebSocketErrorCode)] = [
            ("invalid UTF-8", [Self.frame(.text, [0x7B, 0xFF, 0xFE])], .dataInconsistentWithMessage),
            ("invalid UTF-8 across fragments", [Self.frame(.text, [0x7B], fin: false), Self.frame(.continuation, [0xC3])], .dataInconsistentWithMessage),
            ("continuation without a message", [Self.frame(.continuation, [0x41])], .protocolError),
            ("a message inside a message", [Self.text("a", fin: false), Self.text("b")], .protocolError),
            ("reserved bits", [Self.frame(.text, [0x41], rsv1: true)], .protocolError),
            ("unmasked", [Self.frame(.text, Array("{}".utf8), masked: false)], .protocolError),
            ("an unmasked ping", [Self.frame(.ping, masked: false)], .protocolError),
            ("fragments over the limit", [Self.text(String(repeating: "x", count: 60), fin: false), Self.frame(.continuation, Array(repeating: 0x78, count: 41))], .messageTooLarge),
            ("a reserved opcode", [Self.frame(WebSocketOpcode(encodedWebSocketOpcode: 3)!, [1])], .protocolError),
        ]
        for (name, frames, code) in cases {
            var machine = WebSocketConnectionMachine(maxMessageBytes: 100)
            var last = WebSocketConnectionMachine.Action.none
            for frame in frames { last = machine.received(frame) }
            guard case .close(let got, _) = last else {
                Issue.record("\(name): \(last)")
                continue
            }
            #expect(got == code, "\(name)")
            #expect(!machine.isOpen, "\(name)")
            // Closing: nothing more is delivered or answered.
            #expect(machine.received(Self.text("late")) == .none, "\(name)")
            #expect(machine.received(Self.frame(.ping)) == .none, "\(name)")
        }
    }

    @Test func aPeersCloseIsAnsweredOnce() {
        var code = ByteBuffer()
        code.writeInteger(UInt16(1000))
        var machine = WebSocketConnectionMachine(maxMessageBytes: 100)
        #expect(machine.received(Self.frame(.connectionClose, Array(code.readableBytesView))) == .close(.normalClosure, reason: ""))
        #expect(machine.received(Self.frame(.connectionClose)) == .none)
        #expect(machine.pingDue() == .none)
    }

    @Test func closeCodesAnsweredPerRFC6455() {
        func payload(_ code: UInt16, _ reason: [UInt8] = []) -> ByteBuffer {
            var buffer = ByteBuffer()
            buffer.writeInteger(code)
            buffer.writeBytes(reason)
            return buffer
        }
        #expect(WebSocketConnectionMachine.replyCode(toClose: ByteBuffer()) == .normalClosure)
        #expect(WebSocketConnectionMachine.replyCode(toClose: ByteBuffer(bytes: [3])) == .protocolError)
        for valid: UInt16 in [1000, 1001, 1003, 1007, 1011, 3000, 4401, 4999] {
            #expect(WebSocketConnectionMachine.replyCode(toClose: payload(valid, Array("bye".utf8))) == .normalClosure, "\(valid)")
        }
        for invalid: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            #expect(WebSocketConnectionMachine.replyCode(toClose: payload(invalid)) == .protocolError, "\(invalid)")
        }
        #expect(WebSocketConnectionMachine.replyCode(toClose: payload(1000, [0xFF])) == .protocolError)
    }

    @Test func keepaliveClosesAPeerSilentForAWholePeriod() {
        var machine = WebSocketConnectionMachine(maxMessageBytes: 100)
        #expect(machine.pingDue() == .none, "the first turn only arms")
        #expect(machine.pingDue() == .ping)
        // Any frame is a sign of life.
        _ = machine.received(Self.frame(.pong))
        #expect(machine.pingDue() == .ping)
        _ = machine.received(Self.text(#"{"type":"ack"}"#))
        #expect(machine.pingDue() == .ping)
        guard case .close(.goingAway, _) = machine.pingDue() else {
            Issue.record("a silent peer is closed")
            return
        }
        #expect(machine.pingDue() == .none)
    }

    @Test func decoderErrorsCloseWithTheirCodes() {
        for (error, code) in [(NIOWebSocketError.invalidFrameLength, WebSocketErrorCode.messageTooLarge), (.fragmentedControlFrame, .protocolError), (.multiByteControlFrameLength, .protocolError)] {
            var machine = WebSocketConnectionMachine(maxMessageBytes: 100)
            guard case .close(let got, _) = machine.decoderFailed(error) else {
                Issue.record("\(error)")
                continue
            }
            #expect(got == code)
            #expect(machine.decoderFailed(error) == .none, "closing already")
        }
    }

    @Test func aCloseSentStopsDelivery() {
        var machine = WebSocketConnectionMachine(maxMessageBytes: 100)
        machine.closeSent()
        #expect(machine.received(Self.text("x")) == .none)
        #expect(machine.pingDue() == .none)
    }

    /// Every connection's inbox keeps room for two of its items, idle or not, so an item must
    /// stay small: what is rare and large (a decoded message, a refusal) is boxed. Unboxed, an
    /// item took 96 bytes: about 150 bytes more for every idle client.
    @Test func anInboxItemIsSmall() {
        #expect(MemoryLayout<WebSocketInbox<WebSocketRequests.Request>.Item>.stride <= 24)
    }

    @Test func theInboxStartsOneTaskAtATimeAndEndsInOrder() {
        var inbox = WebSocketInbox<Int>(high: 3, low: 1)
        let r1 = inbox.arrived(1)
        #expect(r1, "an idle connection starts a task")
        let r2 = inbox.arrived(2)
        #expect(!r2, "one task at a time")
        let r3 = inbox.next()
        #expect(r3?.item.message == 1)
        let r4 = inbox.next()
        #expect(r4?.item.message == 2)
        let r5 = inbox.next()
        #expect(r5 == nil, "empty: the task ends")
        #expect(!inbox.working)
        let r6 = inbox.arrived(3)
        #expect(r6, "the next message starts another")
        let r7 = inbox.ended()
        #expect(!r7, "the working task will clean up")
        let r8 = inbox.arrived(4)
        #expect(!r8, "nothing after the end")
        // What was read before the end is handled; the end comes last.
        let r8b = inbox.next()
        #expect(r8b?.item.message == 3)
        guard case .ended = inbox.next()?.item else {
            Issue.record("the end is the next item")
            return
        }
        let r9 = inbox.next()
        #expect(r9 == nil)
        let r10 = inbox.ended()
        #expect(!r10, "once")
    }

    @Test func theInboxHoldsReadingBackWhileFull() {
        var inbox = WebSocketInbox<Int>(high: 3, low: 1)
        _ = inbox.arrived(1)
        let r11 = inbox.mayRead()
        #expect(r11)
        _ = inbox.arrived(2)
        _ = inbox.arrived(3)
        let r12 = inbox.mayRead()
        #expect(!r12, "three waiting: reading waits")
        let r13 = inbox.next()
        #expect(r13?.resumeReading == false, "two still waiting")
        let r14 = inbox.next()
        #expect(r14?.resumeReading == true, "down to one: reading goes on")
        #expect(!inbox.readingHeld)
        let r15 = inbox.next()
        #expect(r15?.resumeReading == false)
    }

    /// Property: whatever the interleaving of arrivals, a single worker's steps and the end, every
    /// message read before the end is handled exactly once, in order, then the end once, and a
    /// task is asked for exactly when none works.
    @Test func theInboxAgainstAModel() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            var inbox = WebSocketInbox<Int>(high: 4, low: 1)
            var sent = 0
            var handled: [Int] = []
            var ends = 0
            var working = false
            var ended = false
            func step(_ item: WebSocketInbox<Int>.Item) {
                switch item {
                case .message(let m):
                    #expect(ends == 0, "nothing after the end")
                    handled.append(m)
                case .ended: ends += 1
                }
            }
            for _ in 0..<60 {
                switch Int.random(in: 0..<20, using: &rng) {
                case 0:
                    let start = inbox.ended()
                    #expect(start == (!working && !ended))
                    if start { working = true }
                    ended = true
                case 1..<10:
                    let start = inbox.arrived(sent + 1)
                    if !ended { sent += 1 }
                    #expect(start == (!working && !ended))
                    if start { working = true }
                default:
                    guard working else { continue }
                    if let (item, _) = inbox.next() { step(item) } else { working = false }
                }
            }
            while working, let (item, _) = inbox.next() { step(item) }
            #expect(handled == Array(1...max(sent, 1)).prefix(sent).map { $0 })
            #expect(ends == (ended ? 1 : 0))
        }
    }
}

extension WebSocketInbox.Item {
    var message: Message? {
        if case .message(let m) = self { m } else { nil }
    }
}
