import Hummingbird
import TocsinCore
import TocsinHTTP

/// The operator's HTTP API on the controller (docs/protocol.md, "Operations API"), all with the
/// `admin` scope: the registry of components, live configuration, and commands. Changes go to
/// the leading controller (followers answer `not_leader` naming it); reads are served by any.
struct OperationsAPI: Sendable {
    let controller: Controller
    static let maxBodyBytes = 64 << 10

    func register(on routes: GuardedRoutes<BasicRequestContext>) {
        routes.on(.get, "/v1/components", .admin) { _, _, _ in
            .json(JSONValue.object(["components": .array(await controller.components().map(\.json))]))
        }

        routes.on(.get, "/v1/config", .admin) { _, _, _ in
            let (book, _) = controller.configSnapshot
            var entries: [JSONValue] = []
            for (scope, keys) in book.values.sorted(by: { $0.key < $1.key }) {
                for (k, v) in keys.sorted(by: { $0.key < $1.key }) { entries.append(.object(["scope": scope.json, "key": .string(k), "value": v])) }
            }
            return .json(
                JSONValue.object([
                    "version": .int(book.version), "values": .array(entries), "settings": .array(LiveSettings.all.map(\.json)),
                ]))
        }
        routes.on(.get, "/v1/config/history", .admin) { request, _, _ in
            let limit = try Self.limit(request, default: 50, max: ConfigBook.historyLimit)
            let history = controller.configSnapshot.book.history.suffix(limit).reversed()
            return .json(JSONValue.object(["changes": .array(history.map(\.json))]))
        }
        routes.on(.put, "/v1/config/:key", .admin) { request, context, grant in
            let key = context.parameters.get("key") ?? ""
            let scope = try Self.scope(request)
            let body = try await request.jsonBody(limit: Self.maxBodyBytes)
            guard let value = body["value"] else { throw TocsinError(.badRequest, "the body is {\"value\": …}") }
            let change = try await controller.setConfig(key, to: value, in: scope, by: grant?.client ?? "anonymous")
            return .json(Self.changeAnswer(change, version: controller.configSnapshot.book.version))
        }
        routes.on(.delete, "/v1/config/:key", .admin) { request, context, grant in
            let key = context.parameters.get("key") ?? ""
            let scope = try Self.scope(request)
            let change = try await controller.setConfig(key, to: nil, in: scope, by: grant?.client ?? "anonymous")
            return .json(Self.changeAnswer(change, version: controller.configSnapshot.book.version))
        }

        routes.on(.post, "/v1/commands", .admin) { request, _, grant in
            let body = try await request.jsonBody(limit: Self.maxBodyBytes)
            guard let kindText = body["kind"]?.stringValue, let kind = CommandKind(rawValue: kindText) else {
                throw TocsinError(.invalidCommand, "'kind' must be one of \(CommandKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard let targetJSON = body["target"], let target = try? CommandTarget(json: targetJSON) else {
                throw TocsinError(.invalidCommand, "'target' must be {\"role\": \"broker\"|\"controller\"} or {\"component\": id}")
            }
            let seconds = body["timeoutSeconds"] ?? .int(30)
            guard let timeout = seconds.intValue else { throw TocsinError(.invalidCommand, "'timeoutSeconds' must be an integer") }
            guard timeout >= 1, timeout <= 86_400 else { throw TocsinError(.invalidCommand, "'timeoutSeconds' must be in 1...86400") }
            let record = try await controller.submitCommand(
                kind, args: body["args"] ?? .object([:]), target: target, timeoutMillis: timeout * 1000,
                by: grant?.client ?? "anonymous")
            return .json(record.json, status: .accepted)
        }
        routes.on(.get, "/v1/commands", .admin) { request, _, _ in
            let limit = try Self.limit(request, default: 50, max: CommandBook.finishedLimit + CommandBook.openLimit)
            return .json(JSONValue.object(["commands": .array(controller.commandBook.commands.suffix(limit).reversed().map(\.json))]))
        }
        routes.on(.get, "/v1/commands/:id", .admin) { _, context, _ in
            let id = context.parameters.get("id") ?? ""
            guard let record = controller.commandBook.command(id) else {
                throw TocsinError(.notFound, "no command \(id.prefix(80)) (finished commands are kept for the latest \(CommandBook.finishedLimit))")
            }
            return .json(record.json)
        }
    }

    /// `?role=…` or `?component=…`, exactly one.
    static func scope(_ request: Request) throws(TocsinError) -> ConfigScope {
        let q = request.uri.queryParameters
        switch (q.get("role"), q.get("component")) {
        case (let role?, nil): return .role(try ComponentRole(parsing: role))
        case (nil, let id?):
            guard !id.isEmpty, id.utf8.count <= 128 else { throw TocsinError(.badRequest, "'component' must be 1...128 characters") }
            return .component(id)
        default: throw TocsinError(.badRequest, "say where the setting applies: ?role=broker|controller or ?component=<id> (one of them)")
        }
    }

    static func limit(_ request: Request, default value: Int, max: Int) throws(TocsinError) -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return value }
        guard let n = Int(text), (1...max).contains(n) else { throw TocsinError(.badRequest, "'limit' must be an integer in 1...\(max)") }
        return n
    }

    static func changeAnswer(_ change: ConfigChange?, version: Int64) -> JSONValue {
        guard let change else { return .object(["changed": .bool(false), "version": .int(version)]) }
        return .object(["changed": .bool(true), "version": .int(version), "change": change.json])
    }
}
