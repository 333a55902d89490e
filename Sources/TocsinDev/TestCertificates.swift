public import Foundation

/// A throwaway certificate authority and server certificates it signs, made with the `openssl`
/// command in a directory of their own: for TLS tests and `tocsin dev`, never for production.
/// Every file is PEM. Each `TestCertificates` is a CA of its own, so a second one is a CA the
/// first's clients do not trust.
///
/// ```swift
/// let ca = try TestCertificates()                       // CA + a server certificate for localhost, 127.0.0.1
/// // tocsin serve --tls-cert \(ca.certificate) --tls-key \(ca.key); clients: --tls-ca \(ca.caCertificate)
/// let next = try ca.issue(name: "renewed")              // another certificate of the same CA
/// ```
public struct TestCertificates: Sendable {
    /// Where the files are.
    public let directory: String
    /// The CA's certificate: what clients are told to trust (`--tls-ca`).
    public let caCertificate: String
    /// The CA's private key.
    public let caKey: String
    /// The server certificate made at creation (`--tls-cert`).
    public let certificate: String
    /// Its private key (`--tls-key`).
    public let key: String

    /// The names every server certificate covers, besides the ones asked for.
    public static let defaultHosts = ["localhost", "127.0.0.1"]

    /// Makes a CA and a server certificate for `localhost`, `127.0.0.1` and `hosts` (names or IP
    /// addresses) in `directory` (created; a fresh temporary directory when nil). Both are
    /// valid from now for `days`.
    public init(directory: String? = nil, hosts: [String] = [], days: Int = 2) throws {
        let directory = directory ?? NSTemporaryDirectory() + "tocsin-tls-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        caCertificate = directory + "/ca.pem"
        caKey = directory + "/ca-key.pem"
        try Self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", caKey, "-out", caCertificate,
            "-days", "\(days)", "-subj", "/CN=Tocsin test CA \(UUID().uuidString.prefix(8))",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        let (certificate, key) = try Self.issue(
            name: "server", hosts: hosts, days: days, directory: directory, caCertificate: caCertificate, caKey: caKey)
        self.certificate = certificate
        self.key = key
    }

    /// Another server certificate signed by this CA, for `localhost`, `127.0.0.1` and `hosts`,
    /// as `<name>.pem` and `<name>-key.pem`: returns their paths.
    public func issue(name: String, hosts: [String] = [], days: Int = 2) throws -> (certificate: String, key: String) {
        try Self.issue(name: name, hosts: hosts, days: days, directory: directory, caCertificate: caCertificate, caKey: caKey)
    }

    /// Copies a certificate and its key over the files at `live` (what a server was started
    /// with), as a renewal would before a reload.
    public static func install(_ pair: (certificate: String, key: String), at live: (certificate: String, key: String)) throws {
        for (from, to) in [(pair.certificate, live.certificate), (pair.key, live.key)] {
            try? FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
    }

    /// Removes the directory and everything in it.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func issue(
        name: String, hosts: [String], days: Int, directory: String, caCertificate: String, caKey: String
    ) throws -> (certificate: String, key: String) {
        let certificate = "\(directory)/\(name).pem"
        let key = "\(directory)/\(name)-key.pem"
        let request = "\(directory)/\(name).csr"
        let extensions = "\(directory)/\(name).ext"
        let names = (defaultHosts + hosts).map { isIPAddress($0) ? "IP:\($0)" : "DNS:\($0)" }
        try """
            subjectAltName=\(names.joined(separator: ","))
            basicConstraints=critical,CA:FALSE
            keyUsage=critical,digitalSignature,keyEncipherment
            extendedKeyUsage=serverAuth

            """.write(toFile: extensions, atomically: true, encoding: .utf8)
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", request,
            "-subj", "/CN=\(hosts.first ?? "localhost")",
        ])
        try openssl([
            "x509", "-req", "-in", request, "-CA", caCertificate, "-CAkey", caKey, "-set_serial", "\(UInt64.random(in: 1...UInt64(Int64.max)))",
            "-days", "\(days)", "-extfile", extensions, "-out", certificate,
        ])
        return (certificate, key)
    }

    private static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// The `openssl` program: on the PATH, else /usr/bin/openssl.
    static var opensslPath: String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for folder in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(folder)/openssl") {
            return "\(folder)/openssl"
        }
        return "/usr/bin/openssl"
    }

    private static func openssl(_ arguments: [String]) throws {
        _ = try ChildProcess.output(of: opensslPath, arguments)
    }
}
