/// A publisher's key for one publish: `key` in a WebSocket `publish`, the `Idempotency-Key`
/// header over HTTP. A publish whose key its stream has already stored within the dedupe window
/// is not stored again; its reply carries the seqs of the first one and `duplicate: true`. So a
/// publisher that lost a reply (a dropped connection, a broker killed mid-publish) can send the
/// same publish again, with the same key, without storing it twice. The key names the whole
/// publish (one event or a batch); what it carries is not compared.
public enum PublishKey {
    /// Longest key, in UTF-8 bytes.
    public static let maxBytes = 200

    /// `key` if it is a usable key; a `bad_request` otherwise.
    public static func validated(_ key: String) throws(TocsinError) -> String {
        let bytes = key.utf8.count
        guard bytes > 0, bytes <= maxBytes else {
            throw TocsinError(.badRequest, "a publish key must be 1 to \(maxBytes) bytes, got \(bytes)")
        }
        // PostgreSQL's text cannot hold it; refused here, on every store alike.
        guard !key.utf8.contains(0) else { throw TocsinError(.badRequest, "a publish key must not contain the character U+0000") }
        return key
    }
}
