import TocsinHTTPClient
import WSClient

extension TransportFailure {
    /// `from(_:url:timeout:)`, knowing the WebSocket client's errors too: what `Connection` throws
    /// when a WebSocket connection cannot be made.
    static func from(connecting error: any Error, url: String) -> TransportFailure? {
        guard let error = error as? WebSocketClientError else { return from(error, url: url) }
        if error == .invalidURL { return make(.badURL, "not a ws:// or wss:// URL", url: url) }
        if error == .webSocketUpgradeFailed { return make(.notWebSocket, "the upgrade was refused", url: url) }
        return make(.other, "\(error)", url: url)
    }
}
