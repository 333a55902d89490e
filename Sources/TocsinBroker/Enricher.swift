import TocsinCore

/// Joins a matching event with the dataset records its channel's `enrich` clauses select, from
/// the broker's tables (`DatasetTables`), as the notification's `enriched` object:
/// `{"<as>": {"version": v, "records": [...]}, ...}`, one entry per clause in declared order.
/// `version` is the table's version when the clause was evaluated (docs/channels.md). A table
/// not loaded, or loaded under another definition of the dataset (it is being reloaded), gives
/// `"version": null` and no records rather than records read with the wrong fields.
struct Enricher: Sendable {
    let tables: DatasetTables

    /// nil for a channel without `enrich` clauses.
    func json(_ channel: CompiledChannel, record: Record, params: [Value], nowMillis: Int64) -> String? {
        guard !channel.enrichments.isEmpty else { return nil }
        var out = "{"
        for (i, enrichment) in channel.enrichments.enumerated() {
            if i > 0 { out += "," }
            JSONWriter.writeString(enrichment.clause.alias, into: &out)
            out += ":"
            let found = tables.read(enrichment.dataset.name) { table -> Enriched? in
                guard table.definition == enrichment.dataset else { return nil }
                return enrichment.evaluate(record: record, params: params, nowMillis: nowMillis, table: table)
            }
            guard let enriched = found ?? nil else {
                out += #"{"version":null,"records":[]}"#
                continue
            }
            out += #"{"version":"#
            out += String(enriched.version)
            out += #","records":["#
            for (j, r) in enriched.records.enumerated() {
                if j > 0 { out += "," }
                out += enrichment.dataset.schema.json(of: r)
            }
            out += "]}"
        }
        out += "}"
        return out
    }
}
