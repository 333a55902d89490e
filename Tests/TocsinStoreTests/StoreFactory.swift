import Foundation
import Synchronization
import Testing
import TocsinCore
import TocsinDev
import TocsinStore
import TocsinTesting

/// A kind of store the conformance suite (`StoreConformanceTests`) runs against.
///
/// To add a store (PostgreSQL, say): write a `StoreHome` whose `open` opens the store on a
/// location of its own, fresh and empty (a temporary directory, a throwaway database), the same
/// location on every call so that a test can reopen what it stored, and whose `remove` deletes
/// that location; then add a factory making it to `StoreFactory.all`. Every conformance test
/// then runs on the new store too. What only one store has (SQLite's file, its writer lock, its
/// checkpoints) is tested in a suite of that store's own (`SQLiteStoreTests`).
struct StoreFactory: Sendable, CustomTestStringConvertible {
    let name: String
    let makeHome: @Sendable () async throws -> any StoreHome

    var testDescription: String { name }

    static let all: [StoreFactory] = [.sqlite, .postgres]

    /// A file in a temporary directory, commits not synced (the tests do not pull the plug).
    static let sqlite = StoreFactory(name: "SQLite") { SQLiteHome() }

    /// A database of its own on the throwaway PostgreSQL server the test process shares (fsync off), dropped after the test.
    static let postgres = StoreFactory(name: "PostgreSQL") { try await PostgresHome.make() }

    /// Runs `body` with a fresh home, removed afterwards (also when `body` throws).
    func withHome<T>(_ body: (any StoreHome) async throws -> T) async throws -> T {
        let home = try await makeHome()
        do {
            let result = try await body(home)
            await home.remove()
            return result
        } catch {
            await home.remove()
            throw error
        }
    }

    /// Runs `body` with a store opened in a fresh home.
    func withStore<T>(_ options: StoreOptions = StoreOptions(), _ body: (any Store) async throws -> T) async throws -> T {
        try await withHome { home in try await body(try await home.open(options)) }
    }
}

/// What a conformance test may ask of any store when opening it.
struct StoreOptions: Sendable {
    /// How long a publish key is remembered.
    var publishKeyWindow: Duration = .seconds(120)
    /// The most room the store may take; nil for no limit.
    var maxBytes: Int64? = nil
    /// The store's wall clock (a test's own, to move time without waiting).
    var nowMillis: @Sendable () -> Int64 = WallClock.nowMillis
}

/// A wall clock a test moves by hand.
final class TestClock: Sendable {
    private let millis: Atomic<Int64>

    init(_ start: Int64 = WallClock.nowMillis()) { millis = Atomic(start) }

    @Sendable func now() -> Int64 { millis.load(ordering: .relaxed) }

    func advance(byMillis delta: Int64) { millis.add(delta, ordering: .relaxed) }
}

/// Where one test's store lives.
protocol StoreHome: Sendable {
    /// Opens the store of this home: empty the first time, with what earlier opens stored after.
    func open(_ options: StoreOptions) async throws -> any Store
    /// Deletes the home and everything stored in it.
    func remove() async
}

struct SQLiteHome: StoreHome {
    let directory = TemporaryDirectory.make()

    func open(_ options: StoreOptions) async throws -> any Store {
        var configuration = SQLiteStore.Configuration(
            path: directory + "/db.sqlite", synchronousFull: false, publishKeyWindow: options.publishKeyWindow, maxBytes: options.maxBytes)
        configuration.nowMillis = options.nowMillis
        return try await StoreConfiguration.sqlite(configuration).open(logger: .init(label: "tocsin.store"))
    }

    func remove() async { TemporaryDirectory.remove(directory) }
}

struct PostgresHome: StoreHome {
    let server: PostgresDatabase

    init(server: PostgresDatabase) { self.server = server }

    static func make() async throws -> PostgresHome { PostgresHome(server: try await PostgresServer.database()) }

    func open(_ options: StoreOptions) async throws -> any Store {
        var configuration = PostgresStore.Configuration(
            // A long operation timeout: these tests are about what is stored, and the whole suite
            // beside them can make a first connection slow (outages: PostgresStoreTests).
            location: try PostgresLocation(parsing: server.url + "?timeout=30"), publishKeyWindow: options.publishKeyWindow, maxBytes: options.maxBytes)
        configuration.pollInterval = .milliseconds(100)
        configuration.nowMillis = options.nowMillis
        return try await StoreConfiguration.postgres(configuration).open(logger: .init(label: "tocsin.store"))
    }

    func remove() async { server.destroy() }
}

/// Definitions and events the store tests share.
enum Fixtures {
    static let stream = try! StreamDefinition(
        name: "s", json: ["fields": [["name": "n", "type": "int"]], "retention": ["maxEvents": 5]])
    static let big = try! StreamDefinition(
        name: "big", json: ["fields": [["name": "text", "type": "string"]], "retention": ["maxEvents": 5]])
    static let ring = try! StreamDefinition(
        name: "ring", json: ["fields": [["name": "text", "type": "string"]], "retention": ["whenFull": "dropOldest"]])
    static let unbounded = try! StreamDefinition(name: "u", json: ["fields": [["name": "n", "type": "int"]]])

    static func text(_ bytes: Int) -> String { #"{"text":"\#(String(repeating: "x", count: bytes))"}"# }

    /// Appends two 4 KB events at a time to `big` until the store refuses them; returns the last seq stored.
    static func fill(_ store: any Store) async throws -> Int64 {
        var stored: Int64 = 0
        for _ in 0..<1000 {
            do {
                stored = try await store.append(stream: "big", events: [text(4000), text(4000)]).seqs.last!
            } catch let error as TocsinError where error.code == .storeFull {
                return stored
            }
        }
        throw TestFailure("the store never filled")
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
