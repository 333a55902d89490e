package import HTTPTypes
package import Hummingbird
package import Logging
package import TocsinCore

/// Who may call an HTTP route, checked before its handler runs (docs/security.md): the bearer
/// token's grant against the route's permission, and the browser rules (a state-changing request
/// must declare a JSON body, so a cross-site form or `fetch` without a CORS preflight cannot
/// reach it; a request from an origin outside the allow-list is refused).
package struct HTTPAccess: Sendable {
    package let authentication: Authentication
    /// Origins a browser page may call from (`--allow-origin`); `*` allows any.
    package let allowedOrigins: OriginList
    package let nowMillis: @Sendable () -> Int64

    package init(authentication: Authentication, allowedOrigins: OriginList = OriginList([]), nowMillis: @escaping @Sendable () -> Int64) {
        self.authentication = authentication
        self.allowedOrigins = allowedOrigins
        self.nowMillis = nowMillis
    }

    /// The grant for `permission` (nil: the route is public, or authentication is disabled).
    package func check(_ request: Request, _ permission: Permission?) async throws(TocsinError) -> Grant? {
        try checkOrigin(request)
        guard let permission, let verifier = authentication.verifier else { return nil }
        guard let token = try Self.bearer(request.headers) else {
            throw TocsinError(.unauthorized, "\(request.method.rawValue) \(request.uri.path) needs a token: send 'Authorization: Bearer <token>'")
        }
        let now = nowMillis()
        let grant = try await verifier.verify(token, nowMillis: now)
        try grant.check(permission, nowMillis: now)
        return grant
    }

    /// A request from a browser page must come from an allowed origin or the node's own (a page
    /// it serves). Browsers send `Origin: http(s)://…` (or `null`, from sandboxed and file
    /// pages); other clients may send what they like (WebSocket libraries send `ws://host`), and
    /// they can forge it anyway, so only browser origins are checked.
    package func checkOrigin(_ request: Request) throws(TocsinError) {
        guard let origin = request.headers[.origin], Self.isBrowserOrigin(origin), !allowedOrigins.allows(origin) else { return }
        if let authority = request.head.authority, OriginList.sameHost(origin: origin, authority: authority) { return }
        throw TocsinError(.forbidden, "requests from the origin \(origin) are not allowed (the node's --allow-origin list)")
    }

    static func isBrowserOrigin(_ origin: String) -> Bool {
        let lower = origin.lowercased()
        return lower == "null" || lower.hasPrefix("http://") || lower.hasPrefix("https://")
    }

    /// The token of `Authorization: Bearer <token>`; nil without the header; `unauthorized` for
    /// another scheme or several headers.
    package static func bearer(_ headers: HTTPFields) throws(TocsinError) -> String? {
        let values = headers[values: .authorization]
        guard let value = values.first else { return nil }
        guard values.count == 1 else { throw TocsinError(.unauthorized, "give one Authorization header, not \(values.count)") }
        let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw TocsinError(.unauthorized, "the Authorization header must be 'Bearer <token>'")
        }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        guard !token.isEmpty, token.utf8.count <= ClientMessage.maxTokenBytes else {
            throw TocsinError(.unauthorized, "the bearer token must have 1 to \(ClientMessage.maxTokenBytes) bytes")
        }
        return token
    }

    /// A state-changing request (POST, PUT, PATCH) must say `Content-Type: application/json`:
    /// browsers send other types (forms, `text/plain`) across origins without asking first.
    package static func checkContentType(_ request: Request) throws(TocsinError) {
        guard [.post, .put, .patch].contains(request.method) else { return }
        let type = request.headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        guard type == "application/json" else {
            throw TocsinError(
                .unsupportedMediaType,
                "\(request.method.rawValue) \(request.uri.path) takes a JSON body: send 'Content-Type: application/json' (got \(type.map { "'\($0)'" } ?? "none"))"
            )
        }
    }
}

/// An origin allow-list: exact origins (`https://app.example.org`) or `*`.
package struct OriginList: Sendable, Hashable {
    package let origins: Set<String>
    package init(_ origins: [String]) { self.origins = Set(origins.map { $0.lowercased() }) }
    package var isEmpty: Bool { origins.isEmpty }
    package func allows(_ origin: String) -> Bool { origins.contains("*") || origins.contains(origin.lowercased()) }
    /// Whether a browser origin is the node's own address (`authority`, from `Host`), default ports included.
    package static func sameHost(origin: String, authority: String) -> Bool {
        let lower = origin.lowercased()
        let (rest, port) =
            lower.hasPrefix("https://") ? (lower.dropFirst(8), "443") : lower.hasPrefix("http://") ? (lower.dropFirst(7), "80") : (Substring(""), "")
        guard !rest.isEmpty else { return false }
        let withPort = rest.contains(":") && !rest.hasSuffix("]") ? String(rest) : "\(rest):\(port)"
        let host = authority.lowercased()
        let hostWithPort = host.contains(":") && !host.hasSuffix("]") ? host : "\(host):\(port)"
        return withPort == hostWithPort
    }
}

/// A route and what it requires, as registered (the security test walks them all).
package struct RouteRule: Sendable, Hashable, CustomStringConvertible {
    package let method: String
    package let path: String
    /// The permission, as docs/security.md names it: `public`, `admin`, `publish:{name}`, ….
    package let requires: String
    package var description: String { "\(method) \(path) (\(requires))" }
}

/// Registers routes with what each requires: `on` checks the browser rules and the permission,
/// then runs the handler with the grant; any error becomes its JSON answer.
package final class GuardedRoutes<Context: RequestContext> {
    package let router: Router<Context>
    package let access: HTTPAccess
    let logger: Logger
    /// Every route registered so far.
    package private(set) var rules: [RouteRule] = []

    package init(router: Router<Context>, access: HTTPAccess, logger: Logger) {
        self.router = router
        self.access = access
        self.logger = logger
    }

    /// A route nobody needs a token for (health checks).
    package func open(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping @Sendable (Request, Context) async throws -> Response) {
        on(method, path, requires: "public", { _, _ in nil }) { request, context, _ in try await handler(request, context) }
    }

    /// A route needing `permission` (the same for every request).
    package func on(
        _ method: HTTPRequest.Method, _ path: String, _ permission: Permission,
        _ handler: @escaping @Sendable (Request, Context, Grant?) async throws -> Response
    ) {
        on(method, path, requires: "\(permission)", { _, _ in permission }, handler)
    }

    /// A route whose permission depends on the request (`publish:{name}`); `requires` describes it.
    package func on(
        _ method: HTTPRequest.Method, _ path: String, requires: String,
        _ permission: @escaping @Sendable (Request, Context) -> Permission?,
        _ handler: @escaping @Sendable (Request, Context, Grant?) async throws -> Response
    ) {
        rules.append(RouteRule(method: method.rawValue, path: path, requires: requires))
        let (access, logger) = (self.access, self.logger)
        router.on(RouterPath(stringLiteral: path), method: method) { request, context in
            await respond(logger: logger) {
                try HTTPAccess.checkContentType(request)
                let grant = try await access.check(request, permission(request, context))
                return try await handler(request, context, grant)
            }
        }
    }
}

extension GuardedRoutes {
    /// Answers browsers' CORS preflights for allowed origins (403 for others) and marks answers
    /// to allowed origins readable. Without an allow-list, nothing is added: no page elsewhere
    /// can read an answer.
    package func addCORS(methods: [HTTPRequest.Method]) {
        guard !access.allowedOrigins.isEmpty else { return }
        router.add(middleware: OriginPolicy<Context>(origins: access.allowedOrigins, methods: methods))
    }
}

/// CORS for an origin allow-list (Hummingbird's `CORSMiddleware` takes a fixed list only).
struct OriginPolicy<Context: RequestContext>: RouterMiddleware {
    let origins: OriginList
    let methods: [HTTPRequest.Method]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin] else { return try await next(request, context) }
        guard origins.allows(origin) else {
            if request.method == .options {
                return TocsinError(.forbidden, "the origin \(origin) is not allowed (the node's --allow-origin list)").response
            }
            return try await next(request, context)  // refused by the route's own check, unless the node's own page
        }
        if request.method == .options {
            return Response(
                status: .noContent,
                headers: [
                    .accessControlAllowOrigin: origin, .vary: "Origin", .accessControlMaxAge: "600",
                    .accessControlAllowMethods: methods.map(\.rawValue).joined(separator: ", "),
                    .accessControlAllowHeaders: "Authorization, Content-Type, Idempotency-Key",
                ])
        }
        var response = try await next(request, context)
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[values: .vary].append("Origin")
        return response
    }
}
