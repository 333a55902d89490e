import NIOCore

/// The messages one connection has read and not yet handled, and whether a task is handling
/// them: a connection has no task of its own, one starts when a message arrives at an idle
/// connection and ends once the inbox is empty. Messages are handled one at a time, in order.
///
/// It also holds the socket back: once `high` messages wait, the connection stops reading (TCP
/// then pushes back on the client) until they are down to `low`. And it ends the connection's
/// life in order: `ended` queues `.ended` after the messages read before the close, so what a
/// client sent before it closed is handled (an ack, then a close: the ack counts), and the
/// cleanup runs after them, never beside them. At most `high` messages wait, so this is bounded.
///
/// Pure; `WebSocketRequests` holds it under a lock and carries out what it returns.
struct WebSocketInbox<Message> {
    enum Item {
        case message(Message)
        /// The connection closed: clean up (after the message being handled, if any).
        case ended
    }

    private var queue = CircularBuffer<Item>(initialCapacity: 2)
    private(set) var working = false
    private(set) var readingHeld = false
    private(set) var hasEnded = false
    let high: Int
    let low: Int

    init(high: Int = 8, low: Int = 2) {
        precondition(high > low && low >= 0)
        self.high = high
        self.low = low
    }

    var count: Int { queue.count }

    /// Nothing is waiting or being handled, and the connection is open: a message arriving now
    /// would be the next one handled.
    var isIdle: Bool { !working && !hasEnded }

    /// A message was read. True when a task must start to handle it (none is working).
    mutating func arrived(_ message: Message) -> Bool {
        guard !hasEnded else { return false }
        queue.append(.message(message))
        return startWorking()
    }

    /// The connection closed. True when a task must start to clean up.
    mutating func ended() -> Bool {
        guard !hasEnded else { return false }
        hasEnded = true
        queue.append(.ended)
        return startWorking()
    }

    /// The socket may be read now (false: the inbox is full, reading waits for `next`).
    mutating func mayRead() -> Bool {
        guard queue.count < high else {
            readingHeld = true
            return false
        }
        return true
    }

    /// The working task's next item, and whether reading, held back, may go on now. Nil when
    /// the inbox is empty: the task ends, and the next message starts another.
    mutating func next() -> (item: Item, resumeReading: Bool)? {
        guard let item = queue.popFirst() else {
            working = false
            return nil
        }
        let resume = readingHeld && queue.count <= low
        if resume { readingHeld = false }
        return (item, resume)
    }

    private mutating func startWorking() -> Bool {
        guard !working else { return false }
        working = true
        return true
    }
}
