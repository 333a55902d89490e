import Foundation
import HTTPTypes
import Hummingbird
import TocsinCore
import TocsinHTTP
import TocsinStore

/// The dataset routes (docs/protocol.md, "Datasets"): `admin` defines and deletes datasets,
/// `read:<dataset>` reads records, `write:<dataset>` writes them. Every batch is validated whole
/// against the definition before anything is stored.
extension HTTPAPI {
    func registerDatasets(on routes: GuardedRoutes<TocsinRequestContext>) {
        let broker = broker
        routes.on(.get, "/v1/datasets", .authenticated) { _, _, grant in
            let datasets = try await storeCall("listing datasets") { try await broker.store.datasets() }.filter { info in
                grant.map { $0.allows(.admin) || $0.allows(.read(stream: info.name)) || $0.allows(.write(dataset: info.name)) } ?? true
            }
            return .json(JSONValue.object(["datasets": .array(datasets.map(Self.describe))]).serialized)
        }
        routes.on(.put, "/v1/datasets/:name", .admin) { request, context, _ in
            let definition = try DatasetDefinition(name: context.parameters.get("name") ?? "", json: try await self.body(request))
            let outcome = try await broker.definitions.putDataset(definition)
            return .json(definition.json.serialized, status: outcome == .created ? .created : .ok)
        }
        routes.on(.get, "/v1/datasets/:name", requires: "read:{name}", Self.named(Permission.read)) { _, context, _ in
            let name = context.parameters.get("name") ?? ""
            let all = try await storeCall("reading the dataset") { try await broker.store.datasets() }
            guard let info = all.first(where: { $0.name == name }) else {
                throw TocsinError(.unknownDataset, "no dataset named '\(name.prefix(130))'")
            }
            return .json(Self.describe(info).serialized)
        }
        routes.on(.delete, "/v1/datasets/:name", .admin) { _, context, _ in
            try await broker.definitions.deleteDataset(context.parameters.get("name") ?? "")
            return Response(status: .noContent)
        }
        routes.on(.get, "/v1/datasets/:name/records", requires: "read:{name}", Self.named(Permission.read)) { request, context, _ in
            let name = context.parameters.get("name") ?? ""
            let definition = try broker.catalog.requireDataset(name)
            let limit = try request.intQuery("limit", default: 100, range: 1...10_000)
            let after: String? = request.uri.queryParameters.get("after").map { String($0) }
            if let after, after.utf8.count > 1_024 {
                throw TocsinError(.badRequest, "'after' must be the 'next' of a previous page")
            }
            let page = try await storeCall("reading records") { try await broker.store.readDataset(name, afterKey: after, limit: Int(limit)) }
            var records: [JSONValue] = []
            for row in page.records {
                // Stored by this code as canonical JSON; a damaged row is reported, not skipped silently.
                records.append(try JSONValue.parse(row.body))
            }
            let next: JSONValue = page.records.count == Int(limit) ? .string(page.records.last!.key) : .null
            return .json(
                JSONValue.object([
                    "dataset": .string(definition.name), "version": .int(page.version), "records": .array(records), "next": next,
                ]).serialized)
        }
        routes.on(.post, "/v1/datasets/:name/records", requires: "write:{name}", Self.named(Permission.write)) { request, context, grant in
            let name = context.parameters.get("name") ?? ""
            let definition = try broker.catalog.requireDataset(name)
            let body = try await self.body(request)
            let items: [JSONValue]
            if case .array(let list) = body { items = list } else { items = [body] }
            guard !items.isEmpty else { throw TocsinError(.badRequest, "a batch needs at least one write") }
            guard items.count <= broker.configuration.maxBatchEvents else {
                throw TocsinError(.tooLarge, "a batch may hold at most \(broker.configuration.maxBatchEvents) writes, got \(items.count)")
            }
            try broker.limits.take(.publish, key: grant?.client, cost: items.count)
            var writes: [DatasetRecordWrite] = []
            writes.reserveCapacity(items.count)
            for (i, item) in items.enumerated() {
                do throws(TocsinError) {
                    writes.append(try Self.write(from: item, definition: definition))
                } catch {
                    throw TocsinError(error.code, items.count > 1 ? "write \(i): \(error.message)" : error.message)
                }
            }
            return try await Self.store(writes, to: definition, broker: broker)
        }
        routes.on(.put, "/v1/datasets/:name/records/:key", requires: "write:{name}", Self.named(Permission.write)) { request, context, grant in
            let definition = try broker.catalog.requireDataset(context.parameters.get("name") ?? "")
            let key = try Self.key(context.parameters.get("key") ?? "", definition: definition)
            try broker.limits.take(.publish, key: grant?.client, cost: 1)
            let record = try definition.schema.record(from: try await self.body(request))
            guard record[definition.keySlot] == key else {
                throw TocsinError(.badRequest, "the record's '\(definition.key)' must equal the key in the path")
            }
            return try await Self.store([DatasetRecordWrite(.upsert(record), definition: definition)], to: definition, broker: broker)
        }
        routes.on(.delete, "/v1/datasets/:name/records/:key", requires: "write:{name}", Self.named(Permission.write)) { _, context, grant in
            let definition = try broker.catalog.requireDataset(context.parameters.get("name") ?? "")
            let key = try Self.key(context.parameters.get("key") ?? "", definition: definition)
            try broker.limits.take(.publish, key: grant?.client, cost: 1)
            return try await Self.store([DatasetRecordWrite(.delete(key: key), definition: definition)], to: definition, broker: broker)
        }
    }

    /// One write of a batch: a record to upsert, or `{"delete": <key>}`.
    static func write(from json: JSONValue, definition: DatasetDefinition) throws(TocsinError) -> DatasetRecordWrite {
        DatasetRecordWrite(try DatasetTable.write(from: json, definition: definition).get(), definition: definition)
    }

    private static func store(_ writes: [DatasetRecordWrite], to definition: DatasetDefinition, broker: Broker) async throws -> Response {
        let version = try await storeCall("writing records") { try await broker.store.writeDataset(definition.name, writes: writes) }
        return .json(ServerMessage.written(id: nil, dataset: definition.name, version: version, written: writes.count).encoded)
    }

    /// A key from a path segment, percent-decoded (docs/protocol.md): the text itself for a
    /// string key, a decimal for an int key.
    private static func key(_ encoded: String, definition: DatasetDefinition) throws(TocsinError) -> Value {
        guard let segment = encoded.removingPercentEncoding else {
            throw TocsinError(.badRequest, "the key in the path is not valid percent-encoding: '\(encoded.prefix(40))'")
        }
        switch definition.schema.fields[definition.keySlot].type {
        case .int:
            guard let n = Int64(segment) else {
                throw TocsinError(.badRequest, "the key of dataset '\(definition.name)' is an int; got '\(segment.prefix(40))'")
            }
            return .int(n)
        default:
            return try DatasetTable.checkedKey(.string(segment), code: .badRequest)
        }
    }

    static func describe(_ info: DatasetInfo) -> JSONValue {
        guard case .object(var o) = info.definition.json else { return .null }
        o["version"] = .int(info.version)
        o["count"] = .int(info.count)
        return .object(o)
    }
}
