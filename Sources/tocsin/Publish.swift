import ArgumentParser
import Foundation
import Logging
import TocsinClient
import TocsinCore
import TocsinStore

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish events to a stream.",
        discussion: """
            Each EVENT is a JSON object; with none, one JSON event per line is read from standard input.
            Example: tocsin publish emergencies '{"kind":"fire","severity":4,"location":{"lat":52.37,"lon":4.89},"area":"Amsterdam","time":"2026-11-23T12:00:00Z"}'
            """)

    @OptionGroup var server: ServerOptions

    @Argument(help: "The stream.")
    var stream: String

    @Argument(help: "Events as JSON objects.")
    var events: [String] = []

    @Flag(help: "Fill a missing 'time' field with the current time.")
    var now = false

    @Option(help: "The publish's key: run again with the same key (within the broker's window, 2 minutes by default), it is not stored twice. A fresh one by default.")
    var key: String?

    func run() async throws {
        var texts = events
        if texts.isEmpty {
            while let line = readLine() {
                if !line.trimmingCharacters(in: .whitespaces).isEmpty { texts.append(line) }
            }
        }
        var parsed: [JSONValue] = []
        for text in texts {
            var event = try JSONValue.parse(text)
            if now, case .object(var o) = event, o["time"] == nil {
                o["time"] = .string(TimeFormat.format(WallClock.nowMillis()))
                event = .object(o)
            }
            parsed.append(event)
        }
        guard !parsed.isEmpty else { throw ValidationError("no events to publish") }
        var logger = Logger(label: "tocsin.publish")
        logger.logLevel = .warning
        if let key { _ = try PublishKey.validated(key) }
        let published = try await Publisher(seeds: server.seeds, trust: server.trust, logger: logger, token: server.tokenSource).publish(
            stream: stream, events: parsed, key: key)
        let seqs = published.seqs.map(String.init).joined(separator: ", ")
        // Without --key a duplicate can only be the library's own retry finding its first try stored.
        if published.duplicate, let key {
            print("already published with key \(key): \(published.seqs.count) event(s) in \(stream), seq \(seqs); nothing stored")
        } else {
            print("published \(published.seqs.count) event(s) to \(stream) via \(published.broker): seq \(seqs)")
        }
    }
}
