import Foundation

/// What /proc says of one process (Linux): CPU time, memory, context switches, descriptors.
/// A figure /proc does not give (another OS, a process gone) reads as 0 or nil.
public struct ProcessFigures: Sendable {
    public let pid: Int32

    public init(pid: Int32) { self.pid = pid }

    /// This process.
    public static var current: ProcessFigures { ProcessFigures(pid: getpid()) }

    /// User + system CPU time so far, in clock ticks, from /proc/PID/stat.
    public var cpuTicks: Int {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime field 14, stime field 15 (1-based over the whole line).
        guard fields.count > 13, let user = Int(fields[11]), let system = Int(fields[12]) else { return 0 }
        return user + system
    }

    /// User + system CPU seconds so far.
    public var cpuSeconds: Double { Double(cpuTicks) / Double(sysconf(Int32(_SC_CLK_TCK))) }

    /// VmRSS and VmHWM, in KiB.
    public var residentMemory: (current: Int, peak: Int)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func value(_ key: String) -> Int? {
            status.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
        }
        guard let current = value("VmRSS:"), let peak = value("VmHWM:") else { return nil }
        return (current, peak)
    }

    /// Context switches (voluntary and not) of all of the process's threads so far, from
    /// /proc/PID/task/*/status: each is a thread going to sleep or being preempted, which on a
    /// VM costs tens of microseconds.
    public var contextSwitches: Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var total = 0
        for task in tasks {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            for line in status.split(separator: "\n") where line.contains("ctxt_switches:") {
                total += Int(line.split(separator: "\t").last ?? "") ?? 0
            }
        }
        return total
    }

    /// Open file descriptors (-1 when /proc cannot tell).
    public var descriptors: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }
}

/// Several processes' figures, summed: the brokers of one benchmark run.
public struct ProcessGroupFigures: Sendable {
    public let members: [ProcessFigures]

    public init(pids: [Int32]) { members = pids.map(ProcessFigures.init(pid:)) }

    public var count: Int { members.count }

    /// User + system CPU seconds so far, all of them.
    public var cpuSeconds: Double { members.reduce(0) { $0 + $1.cpuSeconds } }

    /// Context switches of all their threads so far.
    public var contextSwitches: Int { members.reduce(0) { $0 + $1.contextSwitches } }

    /// VmRSS and VmHWM summed, in KiB (nil when /proc gives none of them).
    public var residentMemory: (current: Int, peak: Int)? {
        let each = members.compactMap(\.residentMemory)
        guard !each.isEmpty else { return nil }
        return each.reduce((0, 0)) { ($0.0 + $1.current, $0.1 + $1.peak) }
    }
}

/// The CPU time of a process and its children (PostgreSQL: the postmaster and its backends and
/// workers), which come and go: read at both ends of a window, each process counts what it spent
/// since the first reading (all of it if born since); one that exited within the window is missed.
public struct ProcessTreeCPU: Sendable {
    public let root: Int32

    public init(root: Int32) { self.root = root }

    /// CPU ticks so far of the root and of each process whose parent it is, by pid.
    public func read() -> [Int32: Int] {
        var ticks = [root: ProcessFigures(pid: root).cpuTicks]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in entries.compactMap({ Int32($0) }) where pid != root {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { continue }
            // After the command: state, then the parent's pid.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, Int32(fields[1]) == root else { continue }
            ticks[pid] = ProcessFigures(pid: pid).cpuTicks
        }
        return ticks
    }

    /// CPU seconds spent between two readings.
    public static func seconds(from start: [Int32: Int], to end: [Int32: Int]) -> Double {
        let ticks = end.reduce(0) { sum, entry in sum + max(0, entry.value - (start[entry.key] ?? 0)) }
        return Double(ticks) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// The whole machine's CPU time (all CPUs, in clock ticks, from the first line of /proc/stat),
/// so a benchmark can say how much of it the hypervisor gave to other guests over its window
/// ("steal"): on a shared VM, steal is what turns a quiet run's 3 ms p99 into a noisy run's
/// 40 ms. (Busy and idle are not printed: on this VM they disagree with the processes' own CPU.)
public struct MachineCPU: Sendable {
    public var total: Double
    public var steal: Double

    public static func read() -> MachineCPU? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return nil }
        // user nice system idle iowait irq softirq steal (guest time is already in user)
        let t = line.split(separator: " ").dropFirst().prefix(8).compactMap { Double($0) }
        guard t.count == 8 else { return nil }
        return MachineCPU(total: t.reduce(0, +), steal: t[7])
    }

    /// The share of the machine's CPU time stolen since `start`, in percent.
    public func stolenPercent(since start: MachineCPU) -> Double {
        (steal - start.steal) / max(total - start.total, 1) * 100
    }
}

/// The steal over a benchmark's window, as printed:
/// "machine: 0.7% of the CPU time was stolen by the hypervisor (2 CPUs)".
public struct MachineSteal: Sendable, Hashable, CustomStringConvertible {
    public var percent: Double
    public var processors: Int

    init?(from start: MachineCPU?, to end: MachineCPU?) {
        guard let start, let end else { return nil }
        percent = end.stolenPercent(since: start)
        processors = ProcessInfo.processInfo.activeProcessorCount
    }

    public var description: String {
        String(format: "machine: %.1f%% of the CPU time was stolen by the hypervisor (%d CPUs)", percent, processors)
    }
}
