import Synchronization
import TocsinCore

/// The discovery list as heartbeat replies carry it. Building it sorts and copies every broker,
/// and encoding it costs more again: with 1,000 brokers heartbeating each second, sending each
/// of them the whole list every time was the controller's whole CPU (1.6 ms per heartbeat). So
/// the list is built once per version, and a reply carries it only to a broker that does not
/// hold that version (`HeartbeatReport.viewVersion`). The version changes when brokers join,
/// leave or change state, when the leader or its epoch changes, and at least every
/// `viewRefresh`, so the loads the list carries are never older than that.
struct HeartbeatView {
    var version: Int64
    var membership: Int64 = -1
    var leader: String?
    var epoch: Int64?
    var builtAt: ClusterTime = .zero
    var view: ClusterView?
    /// `view` as JSON text, made once per version when a reply first needs it.
    var text: String?

    /// A random start, so a broker's version from another controller (a new leader, a
    /// restart) is never taken for this one's.
    static func start() -> HeartbeatView { HeartbeatView(version: Int64.random(in: 1...(1 << 40)) << 16) }

    /// How old the loads in the list may get.
    static let viewRefresh: Duration = .seconds(5)
    /// The list is built at most this often, however fast brokers join: a thousand registering
    /// at once (a controller restart) would otherwise build and send a thousand lists of a
    /// thousand. A joining broker is in the others' lists within this, plus a heartbeat.
    static let minimumRebuild: Duration = .milliseconds(250)
}

extension Controller {
    /// The list to put in a heartbeat's reply (nil: the broker holds it) and its version.
    func heartbeatView(known: Int64?) -> (view: ClusterView?, version: Int64) {
        let at = now()
        let (leader, epoch) = leader(at: at, me: advertisedURL.withLock { $0 })
        let membership = membershipChanges.load(ordering: .relaxed)
        let cached = viewCache.withLock { c -> (ClusterView, Int64)? in
            guard let view = c.view, c.leader == leader, c.epoch == epoch else { return nil }
            let age = at - c.builtAt
            guard age < HeartbeatView.minimumRebuild || (c.membership == membership && age < HeartbeatView.viewRefresh) else { return nil }
            return (view, c.version)
        }
        if let (view, version) = cached { return (known == version ? nil : view, version) }
        let view = cluster
        let version = viewCache.withLock { c -> Int64 in
            c.version += 1
            (c.view, c.membership, c.leader, c.epoch, c.builtAt, c.text) = (view, membership, leader, epoch, at, nil)
            return c.version
        }
        return (view, version)
    }

    /// A lease reply as JSON text. The list it carries is encoded once per version and spliced
    /// in: encoding a thousand brokers for each of a thousand replies is what the cache is for.
    func leaseText(_ reply: LeaseReply) -> String {
        guard let version = reply.viewVersion, reply.cluster != nil else { return reply.json.serialized }
        // Every list a reply carries is the cache's of its version (`heartbeatView`).
        let cached = viewCache.withLock { c -> (String?, Bool) in (c.text, c.version == version) }
        guard cached.1 else { return reply.json.serialized }
        let text: String
        if let made = cached.0 {
            text = made
        } else {
            text = reply.cluster!.json.serialized
            viewCache.withLock { c in if c.version == version { c.text = text } }
        }
        var rest = reply
        rest.cluster = nil
        var head = rest.json.serialized
        head.removeLast()  // the object's closing brace
        return head + #","cluster":"# + text + "}"
    }
}
