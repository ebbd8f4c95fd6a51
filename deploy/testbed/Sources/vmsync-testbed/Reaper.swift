import CSubreaper
import Foundation
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// The launcher is the child subreaper of everything it starts: libvirtd daemonizes each QEMU, and the orphan lands
/// here instead of on PID 1 (which in these sandboxes reaps only every ~1.5 s and so adds that to every migration
/// and destroy). One thread waits for any child; everyone else asks it for the status of theirs.
final class Reaper: @unchecked Sendable {
    static let shared = Reaper()

    private let condition = NSCondition()
    private var statuses: [pid_t: Int32] = [:]
    private var started = false

    /// Turns this process into a subreaper and starts the waiting thread (once).
    func start() throws {
        condition.lock()
        defer { condition.unlock() }
        guard !started else { return }
        guard vmsync_become_subreaper() == 0 else {
            throw LaunchError("prctl(PR_SET_CHILD_SUBREAPER) failed: errno \(errno)")
        }
        started = true
        let thread = Thread { [self] in loop() }
        thread.name = "reaper"
        thread.start()
    }

    private func loop() {
        while true {
            var raw: Int32 = 0
            let pid = waitpid(-1, &raw, 0)
            if pid > 0 {
                condition.lock()
                // Exit status, or 128 + signal as a shell reports it.
                statuses[pid] = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
                condition.broadcast()
                condition.unlock()
            } else {
                usleep(20_000)  // no children right now
            }
        }
    }

    /// The exit status of `pid` once it has exited, or nil after `timeout`.
    func wait(for pid: pid_t, timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while statuses[pid] == nil {
            if !condition.wait(until: deadline) { break }
        }
        return statuses.removeValue(forKey: pid)
    }

    /// Whether `pid` (a child of ours) has exited; its status stays for a later `wait`.
    func hasExited(_ pid: pid_t) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return statuses[pid] != nil
    }
}

/// Why the launcher could not do what it was asked.
struct LaunchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Processes started by the launcher, through posix_spawn with a clean signal mask, waited for by the reaper.
enum Spawn {
    /// Starts `executable`; stdout and stderr append to `log` (or go to /dev/null).
    static func start(_ executable: String, _ arguments: [String], log: String? = nil) throws -> pid_t {
        do {
            return try spawnChild(executable, arguments, stdout: .append(log ?? "/dev/null"))
        } catch {
            throw LaunchError(error.description)
        }
    }

    /// Runs a command to completion and returns its combined output; a non-zero exit is an error naming the command.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], timeout: TimeInterval = 120) throws -> String {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent(
            "vmsync-testbed-\(UUID().uuidString.prefix(8)).log"
        ).path
        defer { unlink(log) }
        let pid = try start(executable, arguments, log: log)
        guard let status = Reaper.shared.wait(for: pid, timeout: timeout) else {
            kill(pid, SIGKILL)
            _ = Reaper.shared.wait(for: pid, timeout: 5)
            throw LaunchError(
                "\(executable) \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s")
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard status == 0 else {
            let last = output.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw LaunchError("\(executable) \(arguments.joined(separator: " ")) exited with \(status): \(last)")
        }
        return output
    }

    /// The PIDs whose parent is this process (libvirtd, and the QEMUs it daemonized).
    static func children() -> [pid_t] {
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            // Fields after the command: state, ppid, …
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, let parent = pid_t(fields[1]), parent == me else { return nil }
            return pid
        }
    }
}
