public import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Hosts on one machine, as far as the network goes: K network namespaces, each linked by a veth
/// pair to one bridge in the root namespace, for tests and benchmarks of "brokers on different
/// hosts". The bridge gets `10.X.Y.1/24` (a /24 no interface or route of this machine uses);
/// namespace i (1-based) gets `10.X.Y.(10+i)` on its `eth0` and its own loopback. A process in
/// the root namespace (a PostgreSQL listening on the bridge's address, a load generator)
/// reaches every namespace, and they reach it and each other; nothing routes further.
///
/// Every name of a run starts with a prefix of its own (`tsn` and 4 random hex digits): the
/// namespaces are `PREFIX-i`, the root-side veth ends `PREFIX-ih`, the bridge `PREFIX-br`.
/// `destroy` (also run when the last reference goes away) kills what `start` started and
/// deletes every namespace, veth and bridge the run made, and nothing else.
///
/// Needs root (`ip netns`, `ip link`); uses `ip` from iproute2.
public final class NetworkNamespaces: Sendable {
    /// One namespace: one host.
    public struct Host: Sendable, Hashable {
        /// The namespace's name (`ip netns list`).
        public let name: String
        /// Its address on the bridge: where its processes listen.
        public let address: String
        /// The veth end in the root namespace, a port of the bridge: `cut` and `restore` set it
        /// down and up. (The end inside the namespace is its `eth0`.)
        public let link: String
    }

    /// The start of every name this run made.
    public let prefix: String
    /// The bridge in the root namespace.
    public let bridge: String
    /// The bridge's address: where the root namespace's servers listen for the namespaces.
    public let bridgeAddress: String
    /// The bridge's network, `10.X.Y.0/24` (e.g. for a `pg_hba.conf` line).
    public let subnet: String
    public let hosts: [Host]

    private let ip: String

    /// What this run made, in the order it made it; `destroy` deletes exactly these.
    private struct Made: Sendable {
        var bridge: String?
        var namespaces: [String] = []
        var links: [String] = []
    }

    private struct State {
        var made: Made
        var processes: [ChildProcess] = []
        var destroyed = false
    }

    private let state: Mutex<State>

    /// The most namespaces one run makes (their addresses are .11 up to .(10+K) of one /24).
    public static let maximumCount = 200

    /// Makes `count` namespaces on one new bridge. Throws, having removed whatever it made,
    /// when this process is not root, `ip` is missing, or a step fails.
    public static func create(count: Int) throws -> NetworkNamespaces {
        guard getuid() == 0 else {
            throw ChildProcessError(
                "network namespaces need root (ip netns add, ip link add); this process runs as uid \(getuid())")
        }
        guard (1...maximumCount).contains(count) else {
            throw ChildProcessError("the number of network namespaces must be in 1...\(maximumCount), got \(count)")
        }
        let ip = try findIP()
        // Names and a /24 that nothing on the machine uses now (interfaces, namespaces, addresses, routes).
        let inUse = [["-o", "link"], ["netns", "list"], ["-4", "-o", "addr"], ["-4", "route"]]
            .map { (try? run(ip, $0)) ?? "" }.joined(separator: "\n")
        var prefix = ""
        for _ in 0..<100 {
            prefix = "tsn" + String(format: "%04x", UInt16.random(in: 0...UInt16.max))
            if !inUse.contains(prefix) { break }
        }
        var network = ""
        for _ in 0..<100 {
            network = "10.\(Int.random(in: 100...254)).\(Int.random(in: 0...255))"
            if !inUse.contains(network + ".") { break }
        }
        guard !inUse.contains(prefix), !inUse.contains(network + ".") else {
            throw ChildProcessError("found no unused name prefix and 10.x.y.0/24 network for the namespaces")
        }
        let bridge = prefix + "-br"
        let bridgeAddress = network + ".1"
        var made = Made()
        var hosts: [Host] = []
        do {
            try run(ip, ["link", "add", bridge, "type", "bridge"])
            made.bridge = bridge
            try run(ip, ["addr", "add", bridgeAddress + "/24", "dev", bridge])
            try run(ip, ["link", "set", bridge, "up"])
            for i in 1...count {
                let host = Host(name: "\(prefix)-\(i)", address: "\(network).\(10 + i)", link: "\(prefix)-\(i)h")
                try run(ip, ["netns", "add", host.name])
                made.namespaces.append(host.name)
                try run(ip, ["link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.name])
                made.links.append(host.link)
                try run(ip, ["link", "set", host.link, "master", bridge])
                try run(ip, ["link", "set", host.link, "up"])
                try run(ip, ["-n", host.name, "addr", "add", host.address + "/24", "dev", "eth0"])
                try run(ip, ["-n", host.name, "link", "set", "eth0", "up"])
                try run(ip, ["-n", host.name, "link", "set", "lo", "up"])
                hosts.append(host)
            }
        } catch {
            remove(made, ip: ip)
            throw error
        }
        return NetworkNamespaces(
            prefix: prefix, bridge: bridge, bridgeAddress: bridgeAddress, subnet: network + ".0/24", hosts: hosts, ip: ip, made: made)
    }

    private init(prefix: String, bridge: String, bridgeAddress: String, subnet: String, hosts: [Host], ip: String, made: Made) {
        (self.prefix, self.bridge, self.bridgeAddress, self.subnet, self.hosts, self.ip) = (prefix, bridge, bridgeAddress, subnet, hosts, ip)
        state = Mutex(State(made: made))
    }

    deinit { destroy() }

    /// Starts `executable arguments` inside `host`'s namespace (`ip netns exec`, which execs it:
    /// the pid is the program's own) as a `ChildProcess`, so its `listening on http://…` line is
    /// read as usual. `destroy` kills it if it still runs.
    public func start(
        on host: Host, executable: String = ChildProcess.tocsinBinary, arguments: [String], environment: [String: String] = [:],
        timeout: Duration = .seconds(30), inheritStderr: Bool = false, output: (@Sendable (String) -> Void)? = nil
    ) async throws -> ChildProcess {
        guard hosts.contains(host) else { throw ChildProcessError("\(host.name) is not a namespace of this run (\(prefix))") }
        let process = try await ChildProcess(
            executable: ip, arguments: ["netns", "exec", host.name, executable] + arguments, environment: environment, timeout: timeout,
            inheritStderr: inheritStderr, output: output)
        let destroyed = state.withLock { s in
            if !s.destroyed { s.processes.append(process) }
            return s.destroyed
        }
        if destroyed {
            process.kill()
            throw ChildProcessError("the namespaces of \(prefix) were destroyed while \(URL(fileURLWithPath: executable).lastPathComponent) started")
        }
        return process
    }

    /// Cuts `host` off the network: its bridge port goes down (`ip link set … down` on the
    /// root-side veth end). Its processes keep running and keep their loopback.
    public func cut(_ host: Host) throws { try setLink(of: host, "down") }

    /// Puts `host` back on the network after `cut`.
    public func restore(_ host: Host) throws { try setLink(of: host, "up") }

    private func setLink(of host: Host, _ upOrDown: String) throws {
        guard hosts.contains(host) else { throw ChildProcessError("\(host.name) is not a namespace of this run (\(prefix))") }
        guard !state.withLock({ $0.destroyed }) else { throw ChildProcessError("the namespaces of \(prefix) are destroyed") }
        try Self.run(ip, ["link", "set", host.link, upOrDown])
    }

    /// Kills (SIGKILL) every process `start` started that still runs, then deletes the run's veth
    /// pairs, namespaces and bridge. Safe to call more than once.
    public func destroy() {
        let (processes, made) = state.withLock { s -> ([ChildProcess], Made?) in
            guard !s.destroyed else { return ([], nil) }
            s.destroyed = true
            defer { s.processes = [] }
            return (s.processes, s.made)
        }
        guard let made else { return }
        for process in processes { process.kill() }
        Self.remove(made, ip: ip)
    }

    /// The namespaces and links of this run that exist now (after `destroy`: none), as `ip`
    /// lists them.
    public func remaining() throws -> [String] {
        let namespaces = try Self.run(ip, ["netns", "list"]).split(separator: "\n").compactMap { $0.split(separator: " ").first }
        let links = try Self.run(ip, ["-o", "link"]).split(separator: "\n").compactMap { line -> Substring? in
            // "7: tsn1a2b-1h@if2: <BROADCAST,…" → the name, without "@peer".
            let fields = line.split(separator: " ")
            return fields.count > 1 ? fields[1].dropLast().split(separator: "@").first : nil
        }
        return (namespaces + links).filter { $0.hasPrefix(prefix) }.map(String.init)
    }

    /// Deletes what `made` lists. The veth pairs go first: deleting one end deletes both at once,
    /// while a namespace's own ends go only when the kernel frees the namespace, some time later.
    private static func remove(_ made: Made, ip: String) {
        for link in made.links.reversed() { _ = try? run(ip, ["link", "del", link]) }
        for namespace in made.namespaces.reversed() { _ = try? run(ip, ["netns", "del", namespace]) }
        if let bridge = made.bridge { _ = try? run(ip, ["link", "del", bridge]) }
    }

    /// Runs `ip arguments`; a non-zero exit throws with its output.
    @discardableResult
    private static func run(_ ip: String, _ arguments: [String]) throws -> String {
        let outputFile = NSTemporaryDirectory() + "tocsin-ip-\(UUID().uuidString.prefix(8)).out"
        let (status, output) = try PostgresServer.spawnAndWait(ip, ["ip"] + arguments, outputFile: outputFile)
        guard status == 0 else { throw ChildProcessError("ip \(arguments.joined(separator: " ")) failed (status \(status)): \(output)") }
        return output
    }

    /// Where iproute2's `ip` is.
    private static func findIP() throws -> String {
        let candidates = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        guard let found = candidates.first(where: FileManager.default.isExecutableFile(atPath:)) else {
            throw ChildProcessError("iproute2's ip was not found (looked in \(candidates.joined(separator: ", "))); install iproute2")
        }
        return found
    }
}
