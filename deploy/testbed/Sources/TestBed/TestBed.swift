public import Foundation
public import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A running local test bed, started through the `vmsync-testbed` launcher as a child process and stopped by its PID.
public final class TestBed: Sendable {
    /// How to reach the nodes.
    public let report: TestBedReport
    private let launcher: ChildProcess

    /// The launcher binary: `$VMSYNC_TESTBED`, else next to the running executable (tests and benchmarks are built
    /// into the same directory), else the debug build of the package.
    public static var launcherPath: String {
        if let path = ProcessInfo.processInfo.environment["VMSYNC_TESTBED"] { return path }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/"
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        // A test bundle's binary sits in `<config>/vmsyncPackageTests.xctest`'s parent.
        for _ in 0..<2 {
            let candidate = directory.appendingPathComponent("vmsync-testbed").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("debug/vmsync-testbed").path
    }

    private init(report: TestBedReport, launcher: ChildProcess) {
        self.report = report
        self.launcher = launcher
    }

    /// Starts a bed of `nodes` nodes and waits (up to `timeout` seconds; the first ever start downloads and builds
    /// the guest) until every node answers.
    ///
    /// With `segments` > 1 the nodes are split in order across that many switches (one per cluster) joined by a router
    /// (`setSegmentLink` cuts one off); `isolated` nodes reach only the other segments' switch hosts.
    public static func start(nodes: Int = 2, segments: Int = 1, isolated: Bool = false, timeout: TimeInterval = 300)
        async throws -> TestBed
    {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "vmsync-bed-\(UUID().uuidString.prefix(8))"
        ).path
        let launcher = try ChildProcess(
            launcherPath,
            [
                "up", "--nodes", String(nodes), "--segments", String(segments), "--dir", directory, "--parent",
                String(getpid()),
            ]
                + (isolated ? ["--isolated"] : []))
        let reportPath = directory + "/" + TestBedReport.fileName
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let data = FileManager.default.contents(atPath: reportPath) {
                return TestBed(report: try JSONDecoder().decode(TestBedReport.self, from: data), launcher: launcher)
            }
            if kill(launcher.pid, 0) != 0 || launcher.stderr.contains("Error") {
                let output = await launcher.stop()
                throw TestBedError(
                    "the test bed did not start: \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let output = await launcher.stop()
        throw TestBedError("the test bed did not come up within \(Int(timeout)) s: \(output)")
    }

    /// The node called `name`.
    public func node(_ name: String) -> TestBedNode {
        guard let node = report.nodes.first(where: { $0.name == name }) else { preconditionFailure("no node \(name)") }
        return node
    }

    /// Tears the bed down (SIGTERM to the launcher, which stops every process it started) and returns its output.
    @discardableResult
    public func stop() async -> String {
        kill(launcher.pid, SIGTERM)
        _ = await launcher.wait(timeout: 60)
        return launcher.stdout + launcher.stderr
    }

    /// Runs a command inside node `name`'s network namespace.
    public func run(on name: String, _ command: [String], timeout: TimeInterval = 30) async throws -> ProcessResult {
        try await TestSupport.run("/usr/sbin/ip", ["netns", "exec", node(name).namespace] + command, timeout: timeout)
    }

    /// Starts a long-running process on node `name`: in its network namespace and its mount namespace (so it sees the
    /// node's own /var/lib/libvirt, /var/lib/vmsync, …), as a node daemon would run there. Stop it by its PID.
    public func start(on name: String, _ executable: String, _ arguments: [String]) throws -> ChildProcess {
        let node = node(name)
        return try ChildProcess(
            "/usr/bin/nsenter",
            [
                "--net=/run/netns/\(node.namespace)", "--mount=/proc/\(node.libvirtdPID)/ns/mnt", "--", executable,
            ] + arguments)
    }

    /// Starts a long-running process in the switch namespace (on the bed's network at `report.switchAddress`, the
    /// host's file system): the bed's control plane and monitoring. Stop it by its PID.
    public func startOnSwitch(segment: Int = 0, _ executable: String, _ arguments: [String]) throws -> ChildProcess {
        try ChildProcess(
            "/usr/bin/nsenter",
            ["--net=/run/netns/\(report.segments[segment].namespace)", "--", executable] + arguments)
    }

    /// Runs a command in a switch namespace (to reach what listens there, or a node from outside it).
    public func runOnSwitch(segment: Int = 0, _ command: [String], timeout: TimeInterval = 30) async throws
        -> ProcessResult
    {
        try await TestSupport.run(
            "/usr/bin/nsenter", ["--net=/run/netns/\(report.segments[segment].namespace)", "--"] + command,
            timeout: timeout)
    }

    /// Cuts (or restores) node `name`'s link to its switch.
    public func setLink(of name: String, up: Bool) async throws {
        let node = node(name)
        try await ip([
            "-n", report.segments[node.segment].namespace, "link", "set", node.switchPort, up ? "up" : "down",
        ])
    }

    /// Cuts (or restores) segment `segment`'s link to the router: nothing crosses between it and the other segments
    /// (its nodes and switch host still reach each other).
    public func setSegmentLink(_ segment: Int, up: Bool) async throws {
        guard let router = report.routerNamespace, let port = report.segments[segment].routerPort else {
            throw TestBedError("the bed has one segment: start it with segments > 1")
        }
        try await ip(["-n", router, "link", "set", port, up ? "up" : "down"])
    }

    private func ip(_ arguments: [String]) async throws {
        let result = try await TestSupport.run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw TestBedError("ip \(arguments.joined(separator: " ")) failed: \(result.stderr)")
        }
    }
}

/// A test-bed failure, with what the launcher said.
public struct TestBedError: Error, CustomStringConvertible {
    public let description: String
    /// Creates an error.
    public init(_ description: String) { self.description = description }
}
