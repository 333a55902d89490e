import Foundation
import Testing
import TocsinDev
import TocsinTesting

extension MultiProcess {
/// The dashboard and the browser client (`clients/js/tocsin.js`) in a real headless browser:
/// Tests/Browser/dashboard_failover.py drives Debian's chromium with Playwright against a
/// `tocsin dev --enable-chaos` network, kills the broker the demo page is on, and checks that
/// the dashboard shows it gone and the client moved, and that the page received every
/// acknowledged event with no gap. `.ci/run` installs chromium and Playwright.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct BrowserTests {
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Browser/dashboard_failover.py").path
    }

    @Test func theDashboardShowsAFailoverAndTheBrowserClientLosesNothing() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium") else {
            Issue.record("the browser test needs Debian's chromium: apt-get install chromium (.ci/run does)")
            return
        }
        let check = try? await Task.detached { try ChildProcess.output(of: "/usr/bin/env", ["python3", "-c", "import playwright"]) }.value
        guard check != nil else {
            Issue.record("the browser test needs Playwright for Python: python3 -m pip install playwright (.ci/run does)")
            return
        }
        let directory = TemporaryDirectory.make()
        defer { TemporaryDirectory.remove(directory) }
        let arguments = ["python3", Self.script, ServerProcess.tocsinBinary, directory, directory + "/dashboard.png"]
        let output = try await Task.detached { try ChildProcess.output(of: "/usr/bin/env", arguments) }.value
        print(output)
        #expect(output.contains("ok: "))
        #expect(FileManager.default.fileExists(atPath: directory + "/dashboard.png"))
    }
}
}
