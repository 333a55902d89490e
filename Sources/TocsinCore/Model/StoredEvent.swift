/// An event as a stream stores it: its seq, when it was stored, and its canonical JSON. The
/// store reads and writes these, the dispatcher matches them, and `GET /v1/streams/{name}/events`
/// returns them (`EventsPage`).
public struct StoredEvent: Sendable, Hashable {
    public var seq: Int64
    /// When the broker stored it.
    public var publishedAtMillis: Int64
    /// The event's canonical JSON object text (fields in schema order), as stored.
    public var json: String
    /// The W3C `traceparent` of the publish that stored it, when that publish was traced and
    /// sampled: deliveries of the event, on whichever broker, are spans of that trace.
    public var trace: String?

    public init(seq: Int64, publishedAtMillis: Int64, json: String, trace: String? = nil) {
        self.seq = seq
        self.publishedAtMillis = publishedAtMillis
        self.json = json
        self.trace = trace
    }
}
