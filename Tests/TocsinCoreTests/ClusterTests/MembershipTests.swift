import Testing

@testable import TocsinCore

@Suite struct MembershipTests {
    typealias F = ClusterFixture
    let lease = Duration.seconds(10)

    @Test func registerGivesALease() throws {
        var membership = Membership(leaseDuration: lease)
        let (record, replaced) = try membership.register(F.registration(location: F.paris), now: .seconds(5))
        #expect(replaced == nil)
        #expect(record.id == "b1")
        #expect(record.incarnation == "inc-1")
        #expect(record.state == .active)
        #expect(record.load == .zero)
        #expect(record.location == F.paris)
        #expect(record.registeredAt == .seconds(5))
        #expect(record.leaseExpiresAt == .seconds(15))
        #expect(record.hasCapacity)
        #expect(membership.brokers["b1"] == record)
        #expect(membership.live == [record])
    }

    @Test func heartbeatRenewsTheLeaseAndRecordsLoad() throws {
        var membership = Membership(leaseDuration: lease)
        _ = try membership.register(F.registration(capacity: 3), now: .zero)
        let load = BrokerLoad(connections: 3, subscriptions: 7, deliveriesPerSecond: 120.5, publishesPerSecond: 3, cpu: 0.4)
        let record = try membership.heartbeat(id: "b1", incarnation: "inc-1", load: load, now: .seconds(8))
        #expect(record.load == load)
        #expect(record.leaseExpiresAt == .seconds(18))
        #expect(record.registeredAt == .zero)
        #expect(!record.hasCapacity)  // 3 of 3 connections
        #expect(membership.brokers["b1"] == record)
        // Still alive past the first lease's end because of the renewal.
        #expect(membership.expire(now: .seconds(12)).isEmpty)
    }

    @Test func leaseExpiresExactlyAtLeaseExpiresAt() throws {
        var membership = Membership(leaseDuration: lease)
        let (record, _) = try membership.register(F.registration(), now: .seconds(1))
        let end = record.leaseExpiresAt
        let justBefore = end - .nanoseconds(1)

        #expect(membership.live(at: justBefore).map(\.id) == ["b1"])
        #expect(membership.expire(now: justBefore).isEmpty)
        #expect(membership.live(at: end).isEmpty)

        // Lapsed but not yet expired: a heartbeat is refused and changes nothing.
        F.expectError(.unknownBroker) { () throws(TocsinError) in
            try membership.heartbeat(id: "b1", incarnation: "inc-1", load: .zero, now: end)
        }
        #expect(membership.brokers["b1"] == record)

        #expect(membership.expire(now: end) == [record])
        #expect(membership.brokers.isEmpty)
        #expect(membership.expire(now: end + .seconds(100)).isEmpty)
        F.expectError(.unknownBroker) { () throws(TocsinError) in
            try membership.heartbeat(id: "b1", incarnation: "inc-1", load: .zero, now: end + .seconds(1))
        }
    }

    @Test func expireReturnsOnlyTheLapsedSortedById() throws {
        var membership = Membership(leaseDuration: lease)
        for (id, at) in [("c", 0), ("a", 0), ("b", 5)] {
            _ = try membership.register(
                F.registration(id: id, webSocketURL: "ws://\(id).x", httpURL: "http://\(id).x"), now: .seconds(at))
        }
        #expect(membership.expire(now: .seconds(12)).map(\.id) == ["a", "c"])
        #expect(membership.live.map(\.id) == ["b"])
    }

    @Test func unknownBrokerHeartbeatChangesNothing() throws {
        var membership = Membership(leaseDuration: lease)
        _ = try membership.register(F.registration(), now: .zero)
        let before = membership.brokers
        F.expectError(.unknownBroker) { () throws(TocsinError) in
            try membership.heartbeat(id: "ghost", incarnation: "inc-1", load: .zero, now: .seconds(1))
        }
        F.expectError(.unknownBroker) { () throws(TocsinError) in try membership.drain(id: "ghost", incarnation: "x", now: .zero) }
        F.expectError(.unknownBroker) { () throws(TocsinError) in try membership.deregister(id: "ghost", incarnation: "x") }
        #expect(membership.brokers == before)
    }

    @Test func restartWithSameAddressReplacesTheOldIncarnation() throws {
        var membership = Membership(leaseDuration: lease)
        let (old, _) = try membership.register(F.registration(incarnation: "inc-1"), now: .zero)
        _ = try membership.heartbeat(id: "b1", incarnation: "inc-1", load: BrokerLoad(connections: 40), now: .seconds(2))
        _ = try membership.drain(id: "b1", incarnation: "inc-1", now: .seconds(3))

        let (new, replaced) = try membership.register(F.registration(incarnation: "inc-2"), now: .seconds(4))
        #expect(replaced?.incarnation == old.incarnation)
        #expect(replaced?.load.connections == 40)
        #expect(new.incarnation == "inc-2")
        #expect(new.state == .active)  // a fresh process starts active and idle
        #expect(new.load == .zero)
        #expect(new.registeredAt == .seconds(4))
        #expect(new.leaseExpiresAt == .seconds(14))

        let before = membership.brokers
        F.expectError(.staleIncarnation) { () throws(TocsinError) in
            try membership.heartbeat(id: "b1", incarnation: "inc-1", load: .zero, now: .seconds(5))
        }
        F.expectError(.staleIncarnation) { () throws(TocsinError) in try membership.drain(id: "b1", incarnation: "inc-1", now: .seconds(5))
        }
        F.expectError(.staleIncarnation) { () throws(TocsinError) in try membership.deregister(id: "b1", incarnation: "inc-1") }
        #expect(membership.brokers == before)
        #expect(try membership.heartbeat(id: "b1", incarnation: "inc-2", load: .zero, now: .seconds(5)).incarnation == "inc-2")
    }

    @Test func sameIncarnationRegisteringAgainIsIdempotent() throws {
        var membership = Membership(leaseDuration: lease)
        _ = try membership.register(F.registration(capacity: 100), now: .zero)
        _ = try membership.heartbeat(id: "b1", incarnation: "inc-1", load: BrokerLoad(connections: 9), now: .seconds(1))
        let (again, replaced) = try membership.register(F.registration(region: "eu-2", capacity: 200), now: .seconds(3))
        #expect(replaced == nil)
        #expect(again.registeredAt == .zero)
        #expect(again.leaseExpiresAt == .seconds(13))
        #expect(again.load.connections == 9)
        #expect(again.capacity == 200)
        #expect(again.region == "eu-2")
        #expect(membership.brokers.count == 1)
        let (third, _) = try membership.register(F.registration(region: "eu-2", capacity: 200), now: .seconds(3))
        #expect(third == again)
    }

    @Test func anotherAddressClaimingALiveIdIsRefused() throws {
        var membership = Membership(leaseDuration: lease)
        let (original, _) = try membership.register(F.registration(), now: .zero)
        let impostors = [
            F.registration(incarnation: "other", webSocketURL: "ws://elsewhere:8080/ws"),
            F.registration(incarnation: "other", httpURL: "http://elsewhere:8080"),
        ]
        for impostor in impostors {
            F.expectError(.brokerIDInUse) { () throws(TocsinError) in try membership.register(impostor, now: .seconds(9)) }
        }
        #expect(membership.brokers == ["b1": original])

        // Once the lease has lapsed the id is free for anyone; the lapsed holder is reported as replaced.
        let (taken, replaced) = try membership.register(impostors[0], now: original.leaseExpiresAt)
        #expect(taken.webSocketURL == "ws://elsewhere:8080/ws")
        #expect(replaced == original)
    }

    @Test func heartbeatWithBadLoadIsRefusedAndChangesNothing() throws {
        var membership = Membership(leaseDuration: lease)
        _ = try membership.register(F.registration(), now: .zero)
        let before = membership.brokers
        let bad = [
            BrokerLoad(connections: -1),
            BrokerLoad(subscriptions: -3),
            BrokerLoad(deliveriesPerSecond: .nan),
            BrokerLoad(publishesPerSecond: -0.5),
            BrokerLoad(cpu: .infinity),
        ]
        for load in bad {
            F.expectError(.badRequest) { () throws(TocsinError) in
                try membership.heartbeat(id: "b1", incarnation: "inc-1", load: load, now: .seconds(1))
            }
        }
        #expect(membership.brokers == before)
    }

    @Test func drainStopsNewClientsButKeepsTheLease() throws {
        var membership = Membership(leaseDuration: lease)
        _ = try membership.register(F.registration(), now: .zero)
        let drained = try membership.drain(id: "b1", incarnation: "inc-1", now: .seconds(4))
        #expect(drained.state == .draining)
        #expect(!drained.hasCapacity)
        #expect(drained.leaseExpiresAt == .seconds(10))  // draining does not renew; heartbeats do
        let renewed = try membership.heartbeat(id: "b1", incarnation: "inc-1", load: .zero, now: .seconds(9))
        #expect(renewed.state == .draining)
        #expect(renewed.leaseExpiresAt == .seconds(19))
        F.expectError(.unknownBroker) { () throws(TocsinError) in try membership.drain(id: "b1", incarnation: "inc-1", now: .seconds(19)) }
        #expect(membership.expire(now: .seconds(19)).map(\.state) == [.draining])
    }

    @Test func deregisterRemovesTheBroker() throws {
        var membership = Membership(leaseDuration: lease)
        _ = try membership.register(F.registration(), now: .zero)
        _ = try membership.register(F.registration(id: "b2", webSocketURL: "ws://b2", httpURL: "http://b2"), now: .zero)
        let removed = try membership.deregister(id: "b1", incarnation: "inc-1")
        #expect(removed.id == "b1")
        #expect(membership.live.map(\.id) == ["b2"])
        F.expectError(.unknownBroker) { () throws(TocsinError) in try membership.deregister(id: "b1", incarnation: "inc-1") }
        // The id is free again at once.
        let (again, replaced) = try membership.register(F.registration(incarnation: "inc-9", webSocketURL: "ws://new"), now: .seconds(1))
        #expect(again.incarnation == "inc-9")
        #expect(replaced == nil)
    }

    struct BadRegistration: Sendable, CustomTestStringConvertible {
        var label: String
        var request: RegistrationRequest
        var testDescription: String { label }
    }

    static let badRegistrations: [BadRegistration] = [
        .init(label: "id with a space", request: F.registration(id: "b 1")),
        .init(label: "id with a slash", request: F.registration(id: "b/1")),
        .init(label: "id with non-ASCII", request: F.registration(id: "brøker")),
        .init(label: "empty id", request: F.registration(id: "")),
        .init(label: "65-character id", request: F.registration(id: String(repeating: "a", count: 65))),
        .init(label: "empty incarnation", request: F.registration(incarnation: "")),
        .init(label: "blank incarnation", request: F.registration(incarnation: "   ")),
        .init(label: "129-character incarnation", request: F.registration(incarnation: String(repeating: "x", count: 129))),
        .init(label: "incarnation with a newline", request: F.registration(incarnation: "inc\n2")),
        .init(label: "ftp scheme", request: F.registration(webSocketURL: "ftp://x")),
        .init(label: "ws without host", request: F.registration(webSocketURL: "ws://")),
        .init(label: "ws with only a path", request: F.registration(webSocketURL: "ws:///path")),
        .init(label: "http URL in the ws field", request: F.registration(webSocketURL: "http://b1.example:8080")),
        .init(label: "ws URL in the http field", request: F.registration(httpURL: "ws://b1.example:8080")),
        .init(label: "relative URL", request: F.registration(webSocketURL: "b1.example:8080/ws")),
        .init(label: "empty http URL", request: F.registration(httpURL: "")),
        .init(label: "URL with a space", request: F.registration(webSocketURL: "ws://b1 .example/ws")),
        .init(label: "URL with user info", request: F.registration(httpURL: "http://user:pw@b1.example")),
        .init(label: "URL with a fragment", request: F.registration(webSocketURL: "ws://b1.example/ws#x")),
        .init(label: "port 0", request: F.registration(webSocketURL: "ws://b1.example:0/ws")),
        .init(label: "port 65536", request: F.registration(httpURL: "http://b1.example:65536")),
        .init(label: "port not a number", request: F.registration(httpURL: "http://b1.example:http")),
        .init(label: "empty port", request: F.registration(httpURL: "http://b1.example:/")),
        .init(label: "unclosed IPv6 host", request: F.registration(webSocketURL: "ws://[::1/ws")),
        .init(label: "host with '..'", request: F.registration(webSocketURL: "ws://a..b/ws")),
        .init(label: "capacity 0", request: F.registration(capacity: 0)),
        .init(label: "negative capacity", request: F.registration(capacity: -5)),
        .init(label: "latitude 91", request: F.registration(location: GeoPoint(lat: 91, lon: 0))),
        .init(label: "longitude -181", request: F.registration(location: GeoPoint(lat: 0, lon: -181))),
        .init(label: "NaN latitude", request: F.registration(location: GeoPoint(lat: .nan, lon: 0))),
        .init(label: "empty region", request: F.registration(region: "")),
        .init(label: "region with a space", request: F.registration(region: "eu west")),
        .init(label: "65-character region", request: F.registration(region: String(repeating: "r", count: 65))),
        .init(label: "version with a space", request: { var r = F.registration(); r.version = "1 0"; return r }()),
        .init(label: "65-character version", request: { var r = F.registration(); r.version = String(repeating: "v", count: 65); return r }()),
        .init(label: "start time past year 9999", request: { var r = F.registration(); r.startedAtMillis = .max; return r }()),
    ]

    @Test(arguments: badRegistrations)
    func malformedRegistrationIsRefusedAndChangesNothing(_ bad: BadRegistration) throws {
        var membership = Membership(leaseDuration: lease)
        _ = try membership.register(F.registration(id: "other", webSocketURL: "ws://o", httpURL: "http://o"), now: .zero)
        let before = membership.brokers
        F.expectError(.invalidRegistration) { () throws(TocsinError) in try membership.register(bad.request, now: .seconds(1)) }
        #expect(membership.brokers == before)
    }

    @Test func errorMessagesNameTheField() {
        do {
            _ = try F.registration(webSocketURL: "ftp://x").validated()
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains("webSocketURL"))
            #expect(error.message.contains("ftp://x"))
        }
        do {
            _ = try F.registration(capacity: 0).validated()
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains("capacity"))
        }
        do {
            _ = try F.registration(id: String(repeating: "z", count: 5000)).validated()
            Issue.record("expected an error")
        } catch {
            #expect(error.message.count < 300)  // long values are cut in messages
        }
    }

    @Test(arguments: [
        F.registration(),
        F.registration(id: String(repeating: "a", count: 64), region: String(repeating: "r", count: 64)),
        F.registration(id: "Broker_1.eu-west", incarnation: String(repeating: "i", count: 128)),
        F.registration(webSocketURL: "wss://b1.example", httpURL: "https://b1.example"),
        F.registration(webSocketURL: "WSS://B1.Example:443/a/b?x=1", httpURL: "HTTP://10.0.0.1"),
        F.registration(webSocketURL: "ws://[::1]:8080/ws", httpURL: "http://[2001:db8::1]"),
        F.registration(webSocketURL: "ws://localhost:65535", httpURL: "http://my_host:1"),
        F.registration(location: GeoPoint(lat: -90, lon: 180)),
        F.registration(capacity: 1),
    ])
    func wellFormedRegistrationIsAccepted(_ request: RegistrationRequest) throws {
        #expect(try request.validated() == request)
    }
}
