import ArgumentParser
import Configuration
import Foundation
import Logging
import ServiceLifecycle
import SystemPackage
import TocsinCore

/// `--config FILE`: a JSON file of live settings (the keys `tocsin config set` takes), read with
/// swift-configuration's `ReloadingFileProvider` and reloaded when it changes (checked every
/// second, and at once on SIGHUP). The broker runs its values over its startup values (flags,
/// environment, defaults); the controller's live configuration is above them. A value out of
/// range, of the wrong type or for a key that is not live is logged and left out; a file that
/// does not parse keeps the values of the last one that did.
struct SettingsFile {
    let path: String
    let role: ComponentRole
    let provider: ReloadingFileProvider<JSONSnapshot>
    let logger: Logger

    /// Reads the file; a missing or malformed one ends the start here, with the reason.
    init(path: String, role: ComponentRole, logger: Logger) async throws {
        self.path = path
        self.role = role
        self.logger = logger
        do {
            provider = try await ReloadingFileProvider<JSONSnapshot>(
                filePath: FilePath(path), pollInterval: .seconds(1), logger: logger.withLevel(.warning))
        } catch {
            throw ValidationError("--config \(path): \(error)")
        }
    }

    /// The live settings in `snapshot` that `role` takes, checked, and what was wrong with the rest.
    func read(_ snapshot: any ConfigSnapshot) -> (values: [String: JSONValue], problems: [String]) {
        var values: [String: JSONValue] = [:]
        var problems: [String] = []
        for setting in LiveSettings.all where setting.roles.contains(role) {
            let type: ConfigType =
                switch setting.kind {
                case .logLevel: .string
                case .integer: .int
                case .number: .double
                case .boolean: .bool
                }
            do {
                guard let content = try snapshot.value(forKey: AbsoluteConfigKey(setting.key.split(separator: ".").map(String.init)), type: type).value?.content
                else { continue }
                let json: JSONValue
                switch content {
                case .string(let s): json = .string(s)
                case .int(let i): json = .int(Int64(i))
                case .double(let d): json = .double(d)
                case .bool(let b): json = .bool(b)
                default: json = .null
                }
                values[setting.key] = try setting.check(json)
            } catch let error as TocsinError {
                problems.append(error.message)
            } catch {
                problems.append("\(setting.key) must be of type \(type): \(error)")
            }
        }
        // Keys that are no live setting of this role (a typo, a startup flag) are said, not silently dropped.
        if let data = FileManager.default.contents(atPath: path), let json = try? JSONValue.parse(Array(data)) {
            problems += LiveSettings.problems(withKeys: LiveSettings.flattenedKeys(json), for: role)
        }
        return (values, problems)
    }

    /// What one version of the file comes to.
    struct Loaded: Equatable {
        var values: [String: JSONValue]
        var problems: [String]
    }

    func load(_ snapshot: any ConfigSnapshot) -> Loaded {
        let (values, problems) = read(snapshot)
        return Loaded(values: values, problems: problems)
    }

    func report(_ loaded: Loaded) {
        for problem in loaded.problems {
            logger.warning("a setting in the settings file is not applied", metadata: ["file": "\(path)", "problem": "\(problem)"])
        }
    }

    /// The provider (which polls the file) and a watcher that hands each new version's values to
    /// `apply` (`initial`: what is in force already); both stop on graceful shutdown.
    func services(initial: Loaded, apply: @escaping @Sendable ([String: JSONValue]) -> Void) -> [any Service] {
        [provider, Watcher(file: self, initial: initial, apply: apply)]
    }

    private struct Watcher: Service {
        let file: SettingsFile
        let initial: Loaded
        let apply: @Sendable ([String: JSONValue]) -> Void

        func run() async throws {
            try await cancelWhenGracefulShutdown {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await watch() }
                    group.addTask { try await sayWhenBroken() }
                }
            }
        }

        private func watch() async throws {
            var last = initial
            try await file.provider.watchSnapshot { updates in
                for await snapshot in updates {
                    let loaded = file.load(snapshot)
                    guard loaded != last else { continue }
                    last = loaded
                    file.report(loaded)
                    apply(loaded.values)
                    file.logger.notice("settings file applied", metadata: ["file": "\(file.path)", "keys": "\(loaded.values.keys.sorted())"])
                }
            }
        }

        /// The provider keeps the last version that parsed and says nothing of one that does not:
        /// this does, once per broken version.
        private func sayWhenBroken() async throws {
            var reported: Date?
            while true {
                try await Task.sleep(for: .seconds(2))
                let attributes = try? FileManager.default.attributesOfItem(atPath: file.path)
                let modified = attributes?[.modificationDate] as? Date
                guard modified != reported else { continue }
                let problem: String?
                if let data = FileManager.default.contents(atPath: file.path) {
                    do {
                        _ = try JSONValue.parse(Array(data))
                        problem = nil
                    } catch {
                        problem = error.message
                    }
                } else {
                    problem = "it cannot be read"
                }
                guard let problem else { continue }
                reported = modified
                file.logger.warning(
                    "the settings file is not valid JSON: the values of its last good version stay in force",
                    metadata: ["file": "\(file.path)", "problem": "\(problem)"])
            }
        }
    }
}

extension Logger {
    fileprivate func withLevel(_ level: Logger.Level) -> Logger {
        var copy = self
        copy.logLevel = max(level, logLevel)
        return copy
    }
}
