import Foundation
import Testing

/// The layering of docs/architecture.md, checked on the sources: what each target must never
/// import, and where SQLite may be named. A change that breaks a rule fails here, naming the file.
struct ImportRulesTests {
    /// Modules a target's sources must not import; `X*` is every module whose name starts with X.
    static let forbidden: [String: [String]] = [
        // Pure: no I/O, no logging, no database, nothing of ours above it.
        "TocsinCore": [
            "NIO*", "GRDB", "Hummingbird*", "AsyncHTTPClient", "WSClient", "Logging", "Metrics", "ServiceLifecycle", "Synchronization",
            "Tocsin*",
        ],
        // The PostgreSQL driver's TLS settings are NIOSSL types; no other networking.
        "TocsinStore": ["NIOPosix", "NIOHTTP*", "NIOWebSocket", "NIOEmbedded", "Hummingbird*", "AsyncHTTPClient", "WSClient", "TocsinBroker", "TocsinClient", "TocsinController", "TocsinHTTP"],
        "TocsinHTTP": ["GRDB", "TocsinStore", "TocsinBroker", "TocsinClient", "TocsinController"],
        "TocsinHTTPClient": ["GRDB", "Hummingbird*", "TocsinStore", "TocsinBroker", "TocsinClient", "TocsinController"],
        // The store's `ControllerLedger` protocol only: the executable opens the PostgreSQL ledger.
        "TocsinController": ["GRDB", "PostgresNIO", "TocsinBroker", "TocsinClient", "TocsinLoad"],
        // The broker sees the store only through `Store`, and never links the app client library.
        "TocsinBroker": ["GRDB", "TocsinClient", "TocsinController", "TocsinLoad", "TocsinDev", "WSClient"],
        "TocsinClient": ["GRDB", "Hummingbird*", "TocsinStore", "TocsinBroker", "TocsinController", "TocsinHTTP"],
        "TocsinLoad": ["GRDB", "TocsinBroker", "TocsinController", "TocsinStore"],
        // Processes and sockets for tests, benches and `tocsin dev`: nothing of ours but the core.
        "TocsinDev": [
            "NIO*", "GRDB", "Hummingbird*", "TocsinStore", "TocsinHTTP", "TocsinHTTPClient", "TocsinBroker", "TocsinController", "TocsinClient",
            "TocsinLoad",
        ],
        // Keys and tokens only: no networking, no storage.
        "TocsinAuth": ["NIO*", "GRDB", "Hummingbird*", "AsyncHTTPClient", "WSClient", "PostgresNIO", "TocsinStore", "TocsinHTTP*", "TocsinBroker", "TocsinController", "TocsinClient", "TocsinLoad", "TocsinDev"],
        // The executable is flags and printing: no event loops, no WebSocket client of its own.
        "tocsin": ["NIO*", "WSClient", "GRDB", "Hummingbird*"],
    ]

    static let sources = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources")

    static func swiftFiles(in target: String) -> [URL] {
        let root = sources.appendingPathComponent(target)
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { return [] }
        return walker.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
    }

    /// `import X`, `public import X`, `@_exported import X`, `import struct X.Y`: the module X.
    static func imports(of file: URL) -> [String] {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(separator: " ").filter { !$0.hasPrefix("@") && !["public", "package", "internal", "private"].contains($0) }
            guard words.first == "import", words.count >= 2 else { return nil }
            let name = words.count >= 3 && ["struct", "class", "enum", "func", "protocol", "typealias"].contains(words[1]) ? words[2] : words[1]
            return String(name.split(separator: ".").first ?? name)
        }
    }

    @Test(arguments: forbidden.keys.sorted())
    func targetImportsNothingItMustNot(target: String) throws {
        let files = Self.swiftFiles(in: target)
        try #require(!files.isEmpty, "no sources found for \(target) under \(Self.sources.path)")
        for file in files {
            for module in Self.imports(of: file) {
                let rule = Self.forbidden[target]!.first { $0.hasSuffix("*") ? module.hasPrefix($0.dropLast()) : module == $0 }
                #expect(rule == nil, "\(target)/\(file.lastPathComponent) imports \(module), which \(target) must never import")
            }
        }
    }

    @Test func sqliteIsNamedOnlyInTheStoreAndTheCommandLinesChoiceOfStore() throws {
        var offenders: [String] = []
        let targets = (try FileManager.default.contentsOfDirectory(atPath: Self.sources.path)).filter { $0 != "TocsinStore" }
        for target in targets {
            for file in Self.swiftFiles(in: target) {
                let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
                guard text.contains("SQLiteStore") else { continue }
                if target == "tocsin" && file.lastPathComponent == "Serve.swift" { continue }
                offenders.append("\(target)/\(file.lastPathComponent)")
            }
        }
        #expect(offenders.isEmpty, "SQLiteStore named outside the store module: \(offenders)")
    }
}
