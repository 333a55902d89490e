import Foundation
import Testing
import TocsinCore
import TocsinHTTPClient
import TocsinTesting

/// `tocsin serve --config FILE`: the file's live settings are in force from the first request,
/// a change to the file is applied without a restart, a broken version keeps the last good
/// values (and says so), and a setting that is not live or out of range is named and skipped.
@Suite(.timeLimit(.minutes(2)))
struct SettingsFileTests {
    static let event = #"{"kind":"fire","severity":4,"location":{"lat":52.3,"lon":4.9},"area":"ams","time":"2026-12-07T00:00:00Z"}"#

    @Test func aSettingsFileIsAppliedAtStartAndReloadedWhenItChanges() async throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let file = directory + "/settings.json"
        // One publish, then nothing for 1000 s: the second is refused.
        try #"{"limits": {"publishEventsPerSecond": 0.001, "publishEventsBurst": 1}, "port": 9, "limits.subscribesBurst": -3}"#
            .write(toFile: file, atomically: true, encoding: .utf8)
        let log = directory + "/stderr.log"
        let server = try await ServerProcess(
            arguments: ["serve", "--port", "0", "--data-dir", directory, "--no-fsync", "--config", file], stderrFile: log)
        defer { server.kill(SIGKILL) }
        let token = try AuthProcessTests.token(directory + "/auth-keys.json", client: "pub", scopes: ["publish:emergencies"])
        let url = "http://127.0.0.1:\(server.port)/v1/streams/emergencies/events"
        @Sendable func publish() async throws -> Int {
            try await HTTPCall.send(.POST, url, rawBody: Self.event, headers: [("Authorization", "Bearer " + token)]).status
        }
        #expect(try await publish() == 201)
        #expect(try await publish() == 429, "the file's limit is in force from the first request")
        let stderr = try String(contentsOfFile: log, encoding: .utf8)
        #expect(stderr.contains("port is not live: it is set at startup with --port"), "\(stderr)")
        #expect(stderr.contains("limits.subscribesBurst must be a number in 1.0...1000000000.0; got -3.0"), "\(stderr)")

        // Unlimited: applied without a restart.
        try #"{"limits": {"publishEventsPerSecond": 0}}"#.write(toFile: file, atomically: true, encoding: .utf8)
        try await waitUntil("the changed file is applied", timeout: .seconds(15)) { (try? await publish()) == 201 }
        #expect(try await publish() == 201)

        // A version that does not parse: the last good values stay, and the log says so.
        try #"{"limits": {"publishEventsPerSecond": "#.write(toFile: file, atomically: true, encoding: .utf8)
        try await waitUntil("the broken file is reported", timeout: .seconds(15)) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("the settings file is not valid JSON")
        }
        for _ in 0..<3 { #expect(try await publish() == 201) }

        // Back to a limit: in force again.
        try #"{"limits": {"publishEventsPerSecond": 0.001, "publishEventsBurst": 1}}"#.write(toFile: file, atomically: true, encoding: .utf8)
        try await waitUntil("the limit is back", timeout: .seconds(15)) { (try? await publish()) == 429 }
        #expect(server.isRunning)
    }

    @Test func aSettingsFileThatCannotBeReadStopsTheStartWithTheReason() throws {
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let (status, stderr) = try CommandLineTests.run(
            ["serve", "--port", "0", "--data-dir", directory, "--insecure-no-auth", "--config", directory + "/missing.json"])
        #expect(status != 0)
        #expect(stderr.contains("--config \(directory)/missing.json"), "\(stderr)")
    }
}
