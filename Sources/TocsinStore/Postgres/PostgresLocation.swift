public import TocsinCore

/// Where a PostgreSQL store lives, from a connection string as libpq takes it: a URL
/// (`postgres://user:password@host:5432/db?sslmode=disable`) or key-value pairs
/// (`host=a,b port=5432 dbname=tocsin user=tocsin target_session_attrs=read-write`).
///
/// Several hosts (`host=a,b`, or `postgres://a:5432,b:5433/db`) are tried in order; with
/// `target_session_attrs=read-write` (the default here, since a store writes) only a server
/// that accepts writes is taken, so brokers follow a primary switch to a promoted standby.
/// Tocsin's own options ride along as query or key-value parameters: `pool` (connections,
/// default 10) and `timeout` (seconds an operation may wait for the database, default 5).
public struct PostgresLocation: Sendable, Hashable, CustomStringConvertible {
    public struct Host: Sendable, Hashable {
        public var name: String
        public var port: Int

        public init(name: String, port: Int) {
            self.name = name
            self.port = port
        }
    }

    public var hosts: [Host]
    public var user: String
    public var password: String?
    public var database: String
    /// `sslmode`: `disable` (the default) or `require`.
    public var requireTLS: Bool = false
    /// Only servers that accept writes (`read-write`, the default) or any (`any`).
    public var readWriteOnly: Bool = true
    /// Connections the store may hold (the change listener takes one more).
    public var poolSize: Int = 10
    /// The longest an operation waits for the database before it fails with `store_unavailable`.
    public var operationTimeout: Duration = .seconds(5)

    public init(hosts: [Host], user: String, password: String? = nil, database: String) {
        self.hosts = hosts
        self.user = user
        self.password = password
        self.database = database
    }

    /// Without the password.
    public var description: String {
        let where_ = hosts.map { "\($0.name):\($0.port)" }.joined(separator: ",")
        return "postgres://\(user)@\(where_)/\(database)"
    }

    /// Whether `text` names a PostgreSQL store (rather than a SQLite path).
    public static func isConnectionString(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") || text.contains("host=") || text.contains("dbname=")
    }

    public init(parsing text: String) throws(TocsinError) {
        var options: [String: String] = [:]
        var hostList: [(String, String?)] = []
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            var rest = Substring(text[text.index(after: text.firstIndex(of: ":")!)...].dropFirst(2))
            if let q = rest.firstIndex(of: "?") {
                for pair in rest[rest.index(after: q)...].split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    options[String(kv[0])] = kv.count > 1 ? Self.percentDecoded(kv[1]) : ""
                }
                rest = rest[..<q]
            }
            if let at = rest.lastIndex(of: "@") {
                let credentials = rest[..<at]
                let parts = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                options["user"] = Self.percentDecoded(parts[0])
                if parts.count > 1 { options["password"] = Self.percentDecoded(parts[1]) }
                rest = rest[rest.index(after: at)...]
            }
            if let slash = rest.firstIndex(of: "/") {
                options["dbname"] = Self.percentDecoded(rest[rest.index(after: slash)...])
                rest = rest[..<slash]
            }
            for host in rest.split(separator: ",") {
                let parts = host.split(separator: ":", maxSplits: 1)
                hostList.append((String(parts[0]), parts.count > 1 ? String(parts[1]) : nil))
            }
        } else {
            for pair in text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }) {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2 else { throw Self.bad("'\(pair)' is not key=value") }
                options[String(kv[0])] = String(kv[1])
            }
            let names = (options["host"] ?? "localhost").split(separator: ",").map(String.init)
            let ports = (options["port"] ?? "").split(separator: ",").map(String.init)
            guard ports.count <= 1 || ports.count == names.count else {
                throw Self.bad("give one port, or one per host (\(names.count) hosts, \(ports.count) ports)")
            }
            for (i, name) in names.enumerated() { hostList.append((name, ports.isEmpty ? nil : ports[ports.count == 1 ? 0 : i])) }
        }
        if hostList.isEmpty { hostList = [("localhost", nil)] }
        var hosts: [Host] = []
        for (name, portText) in hostList {
            guard !name.isEmpty else { throw Self.bad("a host name is empty") }
            let port = try portText.map { text throws(TocsinError) -> Int in
                guard let port = Int(text), (1...65535).contains(port) else { throw Self.bad("port '\(text)' is not in 1...65535") }
                return port
            } ?? Int(options["port"].flatMap { Int($0) } ?? 5432)
            hosts.append(Host(name: name, port: port))
        }
        guard let user = options["user"], !user.isEmpty else { throw Self.bad("it names no user") }
        self.init(hosts: hosts, user: user, password: options["password"], database: options["dbname"] ?? user)
        switch options["sslmode"] ?? "disable" {
        case "disable", "allow", "prefer": requireTLS = false
        case "require", "verify-ca", "verify-full": requireTLS = true
        case let other: throw Self.bad("sslmode '\(other)' is not one of disable, prefer, require")
        }
        switch options["target_session_attrs"] ?? "read-write" {
        case "read-write", "primary": readWriteOnly = true
        case "any": readWriteOnly = false
        case let other: throw Self.bad("target_session_attrs '\(other)' is not read-write, primary or any")
        }
        if let text = options["pool"] {
            guard let n = Int(text), (1...1000).contains(n) else { throw Self.bad("pool '\(text)' is not in 1...1000") }
            poolSize = n
        }
        if let text = options["timeout"] {
            guard let n = Double(text), n.isFinite, n >= 0.1, n <= 600 else { throw Self.bad("timeout '\(text)' is not in 0.1...600 seconds") }
            operationTimeout = .milliseconds(Int64(n * 1000))
        }
    }

    private static func bad(_ what: String) -> TocsinError {
        TocsinError(.badRequest, "the PostgreSQL connection string is invalid: \(what)")
    }

    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var i = text.utf8.startIndex
        let utf8 = text.utf8
        while i < utf8.endIndex {
            let byte = utf8[i]
            if byte == UInt8(ascii: "%"), let h = utf8.index(i, offsetBy: 2, limitedBy: utf8.index(before: utf8.endIndex)),
                let value = UInt8(String(decoding: utf8[utf8.index(after: i)...h], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                i = utf8.index(after: h)
            } else {
                bytes.append(byte)
                i = utf8.index(after: i)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
