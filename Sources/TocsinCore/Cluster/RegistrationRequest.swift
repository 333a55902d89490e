/// What a broker sends to join the cluster.
///
/// Everything in it ends up in discovery lists and assignments handed to clients, so it is checked
/// strictly by `validated()` before the controller keeps any of it: a malformed registration is
/// refused with `.invalidRegistration` naming the field, and changes nothing.
public struct RegistrationRequest: Sendable, Hashable {
    /// Stable name of the broker: 1...64 characters of `A-Z a-z 0-9 . _ -`.
    public var id: String
    /// Unique per process start (a UUID, say): 1...128 characters, not blank, no control characters.
    public var incarnation: String
    /// Absolute `ws://` or `wss://` URL with a host, optional port and path.
    public var webSocketURL: String
    /// Absolute `http://` or `https://` URL with a host, optional port and path.
    public var httpURL: String
    /// 1...64 characters of `A-Z a-z 0-9 . _ -`.
    public var region: String
    /// Latitude in [-90, 90], longitude in [-180, 180] when given.
    public var location: GeoPoint?
    /// Maximum client connections, at least 1.
    public var capacity: Int
    /// The Tocsin version the broker runs (at most 64 printable ASCII characters); nil: not said.
    public var version: String?
    /// When the broker process started, in ms since the Unix epoch.
    public var startedAtMillis: Int64?
    /// The broker registers draining (it was told to drain before the controller forgot it).
    public var draining = false

    public init(
        id: String,
        incarnation: String,
        webSocketURL: String,
        httpURL: String,
        region: String,
        location: GeoPoint? = nil,
        capacity: Int
    ) {
        self.id = id
        self.incarnation = incarnation
        self.webSocketURL = webSocketURL
        self.httpURL = httpURL
        self.region = region
        self.location = location
        self.capacity = capacity
    }

    /// The longest URL accepted; broker addresses are short, and this bounds what is stored and echoed.
    public static let maxURLLength = 2048

    /// `self` when every field is well-formed; otherwise `.invalidRegistration` naming the first bad field
    /// and its value.
    public func validated() throws(TocsinError) -> RegistrationRequest {
        try Self.checkName(id, field: "id")
        try Self.checkIncarnation(incarnation)
        try Self.checkURL(webSocketURL, field: "webSocketURL", schemes: ["ws", "wss"])
        try Self.checkURL(httpURL, field: "httpURL", schemes: ["http", "https"])
        try Self.checkName(region, field: "region")
        if let location, GeoPoint.validated(lat: location.lat, lon: location.lon) == nil {
            throw TocsinError(
                .invalidRegistration,
                "location (lat \(location.lat), lon \(location.lon)) is out of range: lat must be in [-90, 90], lon in [-180, 180]"
            )
        }
        if let version, !(1...64).contains(version.utf8.count) || !version.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            throw TocsinError(.invalidRegistration, "version \(quotedForMessage(version)) must be 1...64 printable ASCII characters")
        }
        if let startedAtMillis, !TimeFormat.supportedRange.contains(startedAtMillis) {
            throw TocsinError(.invalidRegistration, "startedAtMillis \(startedAtMillis) is not a time: \(TimeFormat.rangeDescription)")
        }
        guard capacity >= 1 else {
            throw TocsinError(.invalidRegistration, "capacity must be at least 1 client connection, got \(capacity)")
        }
        return self
    }

    // MARK: - Field checks

    private static func checkName(_ value: String, field: String) throws(TocsinError) {
        let bytes = value.utf8
        let allowed = bytes.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
        // Only ASCII is allowed, so UTF-8 bytes and characters are the same count.
        guard (1...64).contains(bytes.count), allowed else {
            throw TocsinError(
                .invalidRegistration,
                "\(field) \(quotedForMessage(value)) must be 1...64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            )
        }
    }

    private static func checkIncarnation(_ value: String) throws(TocsinError) {
        let count = value.count
        guard (1...128).contains(count) else {
            throw TocsinError(
                .invalidRegistration, "incarnation \(quotedForMessage(value)) must be 1...128 characters, got \(count)")
        }
        guard value.contains(where: { !$0.isWhitespace }) else {
            throw TocsinError(.invalidRegistration, "incarnation \(quotedForMessage(value)) must not be blank")
        }
        guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw TocsinError(.invalidRegistration, "incarnation \(quotedForMessage(value)) must not contain control characters")
        }
    }

    private static func checkURL(_ value: String, field: String, schemes: [String]) throws(TocsinError) {
        if let problem = URLCheck.problem(with: value, schemes: schemes, maxLength: maxURLLength) {
            let expected = schemes.map { "\($0)://" }.joined(separator: " or ")
            throw TocsinError(
                .invalidRegistration,
                "\(field) \(quotedForMessage(value)) must be an absolute \(expected) URL with a host: \(problem)"
            )
        }
    }
}

/// A small, strict parser for broker base URLs (`scheme://host[:port][/path][?query]`).
/// Foundation's URL is deliberately not used: the core module is pure Swift, and a broker address
/// needs far less than RFC 3986 (no user info, no fragment, ASCII only).
enum URLCheck {
    /// Nil when `url` is acceptable, else a short reason.
    static func problem(with url: String, schemes: [String], maxLength: Int) -> String? {
        let bytes = Array(url.utf8)
        guard !bytes.isEmpty else { return "it is empty" }
        guard bytes.count <= maxLength else { return "it is longer than \(maxLength) bytes" }
        guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return "only printable ASCII without spaces is allowed"
        }
        guard let separator = find(Array("://".utf8), in: bytes) else { return "there is no scheme (expected \"scheme://\")" }
        let scheme = String(decoding: bytes[..<separator], as: UTF8.self).lowercased()
        guard schemes.contains(scheme) else {
            return scheme.isEmpty ? "there is no scheme" : "the scheme is \"\(scheme)\""
        }
        let rest = bytes[(separator + 3)...]
        if rest.contains(UInt8(ascii: "#")) { return "a fragment ('#') is not allowed" }
        let authorityEnd =
            rest.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }) ?? rest.endIndex
        let authority = Array(rest[rest.startIndex..<authorityEnd])
        guard !authority.isEmpty else { return "there is no host" }
        if authority.contains(UInt8(ascii: "@")) { return "user info ('@') is not allowed" }

        let host: [UInt8]
        let port: [UInt8]?
        if authority[0] == UInt8(ascii: "[") {
            // IPv6 literal: [hex:hex::hex] with an optional :port after the bracket.
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")) else { return "the IPv6 host has no ']'" }
            host = Array(authority[1..<close])
            let after = authority[(close + 1)...]
            if after.isEmpty {
                port = nil
            } else if after.first == UInt8(ascii: ":") {
                port = Array(after.dropFirst())
            } else {
                return "unexpected characters after the IPv6 host"
            }
            let ipv6Allowed = host.allSatisfy { isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }
            guard host.contains(UInt8(ascii: ":")), ipv6Allowed else { return "the IPv6 host is malformed" }
        } else {
            let colons = authority.indices.filter { authority[$0] == UInt8(ascii: ":") }
            guard colons.count <= 1 else { return "the host contains more than one ':'" }
            if let colon = colons.first {
                host = Array(authority[..<colon])
                port = Array(authority[(colon + 1)...])
            } else {
                host = authority
                port = nil
            }
            guard !host.isEmpty else { return "there is no host" }
            let nameAllowed = host.allSatisfy {
                isAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
            }
            guard nameAllowed else { return "the host may contain only letters, digits, '.', '-' and '_'" }
            guard host[0] != UInt8(ascii: "."), host[0] != UInt8(ascii: "-"), find(Array("..".utf8), in: host) == nil else {
                return "the host is malformed"
            }
        }
        if let port {
            guard (1...5).contains(port.count), port.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                return "the port must be a number in 1...65535"
            }
            let number = port.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            guard (1...65535).contains(number) else { return "the port must be a number in 1...65535" }
        }
        return nil
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start..<(start + needle.count)].elementsEqual(needle) {
            return start
        }
        return nil
    }
}
