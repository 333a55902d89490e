/// Dataset records from CSV (RFC 4180: comma-separated, `"` quotes, `""` inside quotes, CRLF or
/// LF line ends), for `tocsin datasets load`. The first row names the columns:
/// - a field's name for string, int, double, bool (`true`/`false`), time (RFC 3339 or integer
///   milliseconds) and list<string> (items separated by `;`);
/// - `<field>.lat` and `<field>.lon` for a geo field.
/// An empty cell is an absent value (allowed for optional fields). Every error names the line.
public enum DatasetCSV {
    /// The records of `text` as JSON objects, ready for `POST /v1/datasets/{name}/records`,
    /// each validated against `definition`.
    public static func records(_ text: String, definition: DatasetDefinition) throws(TocsinError) -> [JSONValue] {
        let rows = try parse(text)
        guard let header = rows.first else { return [] }
        // Column index -> (field, part): part is nil, "lat" or "lon".
        var columns: [(field: FieldSpec, part: String?)?] = []
        var seen = Set<String>()
        for (i, name) in header.enumerated() {
            let trimmed = name.trimmingSpaces
            guard seen.insert(trimmed).inserted else { throw TocsinError(.badRequest, "line 1: column '\(trimmed)' appears twice") }
            if let field = definition.schema.field(named: trimmed), field.type != .geo {
                columns.append((field, nil))
            } else if let dot = trimmed.lastIndex(of: "."), let field = definition.schema.field(named: String(trimmed[..<dot])), field.type == .geo,
                ["lat", "lon"].contains(trimmed[trimmed.index(after: dot)...])
            {
                columns.append((field, String(trimmed[trimmed.index(after: dot)...])))
            } else {
                let known = definition.schema.fields.map { $0.type == .geo ? "\($0.name).lat, \($0.name).lon" : $0.name }.joined(separator: ", ")
                throw TocsinError(.badRequest, "line 1: column \(i + 1) '\(trimmed.prefix(80))' is not a field of '\(definition.name)' (columns: \(known))")
            }
        }
        var out: [JSONValue] = []
        for (n, row) in rows.dropFirst().enumerated() {
            let line = n + 2
            if row.count == 1 && row[0].isEmpty { continue }  // a blank line
            guard row.count == header.count else {
                throw TocsinError(.badRequest, "line \(line): \(row.count) cells, but the header names \(header.count) columns")
            }
            var object: [String: JSONValue] = [:]
            var points: [String: (lat: Double?, lon: Double?)] = [:]
            for (cell, column) in zip(row, columns) {
                guard let column else { continue }
                let text = cell.trimmingSpaces
                if text.isEmpty { continue }
                let field = column.field
                func bad(_ what: String) -> TocsinError {
                    TocsinError(.schemaViolation, "line \(line): '\(field.name)\(column.part.map { "." + $0 } ?? "")' must be \(what), got '\(text.prefix(40))'")
                }
                switch field.type {
                case .string: object[field.name] = .string(text)
                case .int:
                    guard let v = Int64(text) else { throw bad("an integer") }
                    object[field.name] = .int(v)
                case .double:
                    guard let v = Double(text), v.isFinite else { throw bad("a number") }
                    object[field.name] = .double(v)
                case .bool:
                    guard text == "true" || text == "false" else { throw bad("true or false") }
                    object[field.name] = .bool(text == "true")
                case .time:
                    object[field.name] = Int64(text).map { .int($0) } ?? .string(text)
                case .stringList:
                    object[field.name] = .array(text.split(separator: ";").map { .string(String($0).trimmingSpaces) })
                case .geo:
                    guard let v = Double(text), v.isFinite else { throw bad("a number") }
                    if column.part == "lat" { points[field.name, default: (nil, nil)].lat = v } else { points[field.name, default: (nil, nil)].lon = v }
                }
            }
            for (name, point) in points {
                guard let lat = point.lat, let lon = point.lon else {
                    throw TocsinError(.schemaViolation, "line \(line): '\(name)' needs both \(name).lat and \(name).lon")
                }
                object[name] = .object(["lat": .double(lat), "lon": .double(lon)])
            }
            let record = JSONValue.object(object)
            do {
                _ = try definition.schema.record(from: record)
            } catch {
                throw TocsinError(error.code, "line \(line): \(error.message)")
            }
            out.append(record)
        }
        return out
    }

    /// Rows of cells. A quoted cell may hold commas, quotes (doubled) and line breaks.
    static func parse(_ text: String) throws(TocsinError) -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var cell = ""
        var quoted = false
        var line = 1
        var scalars = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        func next() -> Unicode.Scalar? {
            if let p = pending {
                pending = nil
                return p
            }
            return scalars.next()
        }
        var any = false
        while let c = next() {
            any = true
            if quoted {
                if c == "\"" {
                    let after = next()
                    if after == "\"" {
                        cell.unicodeScalars.append("\"")
                    } else {
                        quoted = false
                        pending = after
                    }
                } else {
                    if c == "\n" { line += 1 }
                    cell.unicodeScalars.append(c)
                }
                continue
            }
            switch c {
            case "\"" where cell.isEmpty:
                quoted = true
            case ",":
                row.append(cell)
                cell = ""
            case "\r":
                continue
            case "\n":
                row.append(cell)
                rows.append(row)
                row = []
                cell = ""
                line += 1
            default:
                cell.unicodeScalars.append(c)
            }
        }
        if quoted { throw TocsinError(.badRequest, "line \(line): a quoted cell is not closed") }
        if any && (!cell.isEmpty || !row.isEmpty) {
            row.append(cell)
            rows.append(row)
        }
        return rows
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
