import Foundation
import Testing
import TocsinAuth
import TocsinController
import TocsinCore
import TocsinHTTPClient
import TocsinTesting

/// Brokers and controllers authenticate each other with the cluster credential: a process
/// without it cannot register, renew, drain or leave, and clients need `discovery` to read the
/// broker list (docs/security.md).
@Suite(.timeLimit(.minutes(1)))
struct ClusterCredentialTests {
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    @Test func theControllerRefusesABrokerWithoutTheClusterCredential() async throws {
        let ring = KeyRing(keys: [.generate(id: "k1", algorithm: .es256)], signingKeyID: "k1")
        let authority = try await TokenAuthority(ring: ring)
        let forger = try await TokenAuthority(ring: KeyRing(keys: [.generate(id: "k1", algorithm: .es256)], signingKeyID: "k1"))
        try await TestController.with({ $0.authentication = .tokens(authority) }) { c in
            let body = ControllerAPITests.registration("b1", port: 9001, incarnation: "i1").serialized
            let everythingButCluster: [Scope] = [.admin, .discovery, .metrics, .publish(try NamePattern("*")), .subscribe(try NamePattern("*"))]
            let attempts: [(String, String?, Int, String)] = [
                ("no token", nil, 401, "unauthorized"),
                ("a client's token", try await authority.mint(client: "b1", scopes: everythingButCluster, lifetime: .seconds(60), nowMillis: Self.now()), 403, "forbidden"),
                ("a forged credential", try await forger.mint(client: "broker:b1", scopes: [.cluster], lifetime: .seconds(60), nowMillis: Self.now()), 401, "unauthorized"),
                ("an expired credential", try await authority.mint(client: "broker:b1", scopes: [.cluster], lifetime: .seconds(1), nowMillis: Self.now() - 10_000), 401, "token_expired"),
            ]
            for path in ["/v1/brokers", "/v1/brokers/b1/heartbeat", "/v1/brokers/b1/drain"] {
                for (name, token, status, code) in attempts {
                    let reply = try await HTTPCall.send(.POST, c.url + path, rawBody: body, headers: token.map { [("Authorization", "Bearer " + $0)] } ?? [])
                    #expect(reply.status == status, "\(path), \(name): \(reply.status) \(reply.body)")
                    #expect(reply.body["error"]?["code"]?.stringValue == code, "\(path), \(name)")
                }
            }
            #expect(c.controller.cluster.brokers.isEmpty, "nothing registered")
            // With the credential, a broker registers; discovery needs its own scope.
            let credential = MintedToken(authority: authority, client: "broker:b1", scopes: [.cluster], nowMillis: Self.now)
            var client = ControllerClient(url: c.url, httpClient: HTTPCall.shared)
            client.token = credential.source
            let request = try RegistrationRequest(json: ControllerAPITests.registration("b1", port: 9001, incarnation: "i1"))
            _ = try await client.register(request)
            #expect(c.controller.cluster.brokers.map(\.id) == ["b1"])
            let anonymous = try await HTTPCall.send(.GET, c.url + "/v1/cluster")
            #expect(anonymous.status == 401)
            let discovery = try await authority.mint(client: "phone", scopes: [.discovery], lifetime: .seconds(60), nowMillis: Self.now())
            let listed = try await HTTPCall.send(.GET, c.url + "/v1/cluster", headers: [("Authorization", "Bearer " + discovery)])
            #expect(listed.status == 200)
            // The routes and what each requires, as registered.
            #expect(Set(c.routes) == [
                "GET /healthz (public)", "GET /readyz (public)", "POST /v1/brokers (cluster)", "POST /v1/brokers/:id/heartbeat (cluster)",
                "POST /v1/brokers/:id/drain (cluster)", "DELETE /v1/brokers/:id (cluster)", "GET /v1/cluster (discovery)", "GET /v1/assign (discovery)",
                // Operations: admin only.
                "GET /v1/components (admin)", "GET /v1/config (admin)", "GET /v1/config/history (admin)", "PUT /v1/config/:key (admin)",
                "DELETE /v1/config/:key (admin)", "POST /v1/commands (admin)", "GET /v1/commands (admin)", "GET /v1/commands/:id (admin)",
                "GET /v1/dashboard (admin)", "GET /v1/dashboard/events (admin)",
                // The pages and the browser client hold no data: public.
                "GET /ui (public)", "GET /ui/dashboard.js (public)", "GET /ui/dashboard.css (public)", "GET /demo (public)", "GET /demo.js (public)",
                "GET /tocsin.js (public)", "GET /v1/openapi.yaml (public)",
            ])
            // An operator call without admin is refused.
            let refused = try await HTTPCall.send(.GET, c.url + "/v1/config", headers: [("Authorization", "Bearer " + discovery)])
            #expect(refused.status == 403)
        }
    }
}
