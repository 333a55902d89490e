/// The one place URLs are put together: a base URL joined with a path, HTTP ↔ WebSocket
/// forms, and the check for a wildcard bind address. Every target builds its URLs here.
public enum BaseURL {
    /// `url` without trailing slashes: `http://h:p/` → `http://h:p`.
    public static func trimmed(_ url: String) -> String {
        var u = Substring(url)
        while u.hasSuffix("/") { u.removeLast() }
        return String(u)
    }

    /// `base` joined with `path` by exactly one slash: `join("http://h:p/", "/v1/cluster")` →
    /// `http://h:p/v1/cluster`.
    public static func join(_ base: String, _ path: String) -> String {
        var p = Substring(path)
        while p.hasPrefix("/") { p.removeFirst() }
        return trimmed(base) + "/" + p
    }

    /// `http://h:p` → `ws://h:p/v1/ws` (https → wss).
    public static func webSocketURL(forHTTP http: String) -> String {
        let base = trimmed(http)
        if base.hasPrefix("https://") { return "wss://" + base.dropFirst("https://".count) + "/v1/ws" }
        if base.hasPrefix("http://") { return "ws://" + base.dropFirst("http://".count) + "/v1/ws" }
        return base + "/v1/ws"
    }
}

/// A host a server binds to.
public enum ListenAddress {
    /// `0.0.0.0`, `::` or `[::]`: listens on every address, so it cannot be advertised to
    /// clients; a process bound there must be told its public URL (`--advertise`).
    public static func isWildcard(_ host: String) -> Bool {
        host == "0.0.0.0" || host == "::" || host == "[::]"
    }
}
