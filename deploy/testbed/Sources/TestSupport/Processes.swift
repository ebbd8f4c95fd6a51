import CSpawn
public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The outcome of a finished child process.
public struct ProcessResult: Sendable {
    /// Exit status, or 128 + signal.
    public var status: Int32
    /// What it wrote to stdout.
    public var stdout: String
    /// What it wrote to stderr.
    public var stderr: String
}

/// Runs blocking work on a thread of its own, never on the cooperative pool.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

/// Where a spawned child's output goes.
public enum ChildOutput: Sendable {
    /// A file created or emptied.
    case truncate(String)
    /// A file created or appended to.
    case append(String)
    /// The same place as stdout (for stderr).
    case stdout
}

/// Why a child could not be started.
public struct SpawnError: Error, CustomStringConvertible {
    public let executable: String
    /// posix_spawn's error number.
    public let code: Int32
    public var description: String { "cannot start \(executable): \(String(cString: strerror(code)))" }
}

/// Starts `executable` (looked up in PATH when it has no slash) through posix_spawn: an empty signal mask and default
/// signal dispositions (threads of a test or the bed block signals, and a child would inherit that), stdin from a
/// file, stdout and stderr as `stdout`/`stderr` say, and no other descriptor of ours. The caller waits for it.
public func spawnChild(
    _ executable: String, _ arguments: [String], stdin: String = "/dev/null", stdout: ChildOutput,
    stderr: ChildOutput = .stdout
) throws(SpawnError) -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
    for (descriptor, output) in [(Int32(1), stdout), (2, stderr)] {
        switch output {
        case .truncate(let path):
            posix_spawn_file_actions_addopen(&actions, descriptor, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        case .append(let path):
            posix_spawn_file_actions_addopen(&actions, descriptor, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        case .stdout: posix_spawn_file_actions_adddup2(&actions, 1, descriptor)
        }
    }
    // Nothing else of ours goes to the child: sockets are not close-on-exec (SwiftNIO's accepted ones neither), and a
    // child holding a copy would keep a connection open after we close it.
    vmsync_spawn_closefrom(&actions, 3)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let result = posix_spawnp(&pid, executable, &actions, &attributes, argv, environ)
    guard result == 0 else { throw SpawnError(executable: executable, code: result) }
    return pid
}

/// A child process started with `spawnChild`: an empty signal mask and default dispositions (threads of this test
/// process block signals, and a child would inherit that), stdin from a file, stdout and stderr into files.
public final class ChildProcess: @unchecked Sendable {
    /// The child's PID.
    public let pid: pid_t
    private let directory: URL
    private var status: Int32?

    /// Starts `executable` with `arguments`, `input` on its stdin.
    public init(_ executable: String, _ arguments: [String], input: String = "") throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "vmsync-child-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let stdinPath = directory.appendingPathComponent("stdin").path
        try input.write(toFile: stdinPath, atomically: true, encoding: .utf8)
        do {
            pid = try spawnChild(
                executable, arguments, stdin: stdinPath,
                stdout: .truncate(directory.appendingPathComponent("stdout").path),
                stderr: .truncate(directory.appendingPathComponent("stderr").path))
        } catch {
            throw CocoaError(.executableLoad, userInfo: [NSFilePathErrorKey: executable])
        }
    }

    /// What it has written to stdout so far.
    public var stdout: String {
        (try? String(contentsOfFile: directory.appendingPathComponent("stdout").path, encoding: .utf8)) ?? ""
    }
    /// What it has written to stderr so far.
    public var stderr: String {
        (try? String(contentsOfFile: directory.appendingPathComponent("stderr").path, encoding: .utf8)) ?? ""
    }

    /// Waits for exit, sending SIGKILL to exactly this PID after `timeout` seconds.
    public func wait(timeout: TimeInterval) async -> Int32 {
        if let status { return status }
        let pid = pid
        let code =
            (try? await onThread { () -> Int32 in
                let deadline = Date().addingTimeInterval(timeout)
                var raw: Int32 = 0
                while waitpid(pid, &raw, WNOHANG) == 0 {
                    if Date() > deadline {
                        kill(pid, SIGKILL)
                        waitpid(pid, &raw, 0)
                        break
                    }
                    usleep(5000)
                }
                // Exit status, or 128 + signal as a shell reports it.
                return (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            }) ?? -1
        status = code
        return code
    }

    /// Sends SIGTERM to exactly this PID, waits (SIGKILL after 5 s), and returns what it printed.
    public func stop() async -> String {
        if status == nil { kill(pid, SIGTERM) }
        _ = await wait(timeout: 5)
        return stdout + stderr
    }

    deinit {
        if status == nil {
            kill(pid, SIGKILL)
            var raw: Int32 = 0
            waitpid(pid, &raw, 0)
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Runs a program to completion (killed after `timeout` seconds), feeding `input` on stdin.
public func run(_ executable: String, _ arguments: [String], input: String = "", timeout: TimeInterval = 30)
    async throws
    -> ProcessResult
{
    let child = try ChildProcess(executable, arguments, input: input)
    let status = await child.wait(timeout: timeout)
    return ProcessResult(status: status, stdout: child.stdout, stderr: child.stderr)
}

/// A loopback TCP port nothing listens on now (bound and released: a daemon told to use it may, rarely, find it taken).
public func freeLoopbackPort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw CocoaError(.fileWriteUnknown) }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(descriptor, pointer, length) == 0 && getsockname(descriptor, pointer, &length) == 0
        }
    }
    guard bound else { throw CocoaError(.fileWriteUnknown) }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// The openssl CLI, the independent TLS implementation of the tests.
public let opensslPath = "/usr/bin/openssl"
