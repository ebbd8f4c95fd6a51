import ClusterAPI
import ClusterBed
import Foundation
import Hypervisor
import TestBed
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A cluster on a 2-node test bed: `syncctl migrate --wait` of a VM (the agents tunnel libvirt's connection, memory
/// and disk streams over mutual TLS) against `virsh migrate --live --p2p --copy-storage-all` of its twin — the same
/// domain definition, disk image and size — directly between the same two libvirt daemons, alternating (ABBA).
/// Reported: wall time and guest-visible gap as ratios, and the control plane's own latencies around the libvirt
/// job, from the timestamps the controller and the agents record.
enum ClusterMigrationBenchmark {
    struct Sample {
        var method: String
        var wall: Double
        var gap: Double
        /// vmsync only: seconds from the migration's admission (Pending) to libvirt's migrate call.
        var admittedToJob: Double?
        /// vmsync only: from `syncctl` starting to libvirt's migrate call (includes the CLI's start and handshake).
        var cliToJob: Double?
        /// vmsync only: from the migrate call's return to the stored Succeeded phase.
        var jobToSucceeded: Double?
        /// vmsync only: from the migrate call's return to `syncctl` having seen Succeeded and exited.
        var jobToCLI: Double?
        /// vmsync only: milliseconds from each phase to the next (and to the libvirt job), where the time goes.
        var steps: String = ""
        /// The downtime libvirt reports for the switchover.
        var libvirtDowntimeMs: Int64?
        /// libvirt's downtime without the time the data spent on the network.
        var downtimeWithoutNetworkMs: Int64?
    }

    static func run(rounds: Int, maxDowntimeMs: Int? = nil) async throws {
        print("cluster migration: starting a 2-node test bed, a controller and two agents")
        let bed = try await TestBed.start(nodes: 2)
        do {
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await measure(bed: bed, cluster: cluster, rounds: rounds, maxDowntimeMs: maxDowntimeMs)
        } catch {
            await bed.stop()
            throw error
        }
        await bed.stop()
    }

    private static func measure(bed: TestBed, cluster: BedCluster, rounds: Int, maxDowntimeMs: Int?) async throws {
        let parallel = ProcessInfo.processInfo.environment["VMSYNC_BENCH_PARALLEL"].flatMap(Int64.init)
        if let parallel {
            // Both sides move memory over this many connections (vmsync: tunnelled; virsh: --parallel).
            let both = ProcessInfo.processInfo.environment["VMSYNC_BENCH_PARALLEL_VMSYNC_ONLY"] == nil
            print("cluster migration: memory over \(parallel) connections for \(both ? "both" : "vmsync only")")
            try await cluster.setMigrations(["parallelMigrationConnections": .int(parallel)])
        }
        if let initial = ProcessInfo.processInfo.environment["VMSYNC_BENCH_INITIAL_DOWNTIME"].flatMap(Int64.init) {
            // vmsync's starting downtime limit (its ramp up to the maximum stays).
            print("cluster migration: vmsync starts with a downtime limit of \(initial) ms")
            try await cluster.setMigrations(["initialDowntimeMilliseconds": .int(initial)])
        }
        let downtimeBoth = ProcessInfo.processInfo.environment["VMSYNC_BENCH_DOWNTIME_VMSYNC_ONLY"] == nil
        if let maxDowntimeMs {
            // Both sides get the same QEMU downtime limit: vmsync through the KubeVirt configuration, virsh through
            // migrate-setmaxdowntime before each migration.
            print(
                "cluster migration: QEMU downtime limit \(maxDowntimeMs) ms for \(downtimeBoth ? "both" : "vmsync only")"
            )
            try await cluster.setMigrations([
                "maxDowntimeMilliseconds": .int(Int64(maxDowntimeMs)),
                "initialDowntimeMilliseconds": .int(Int64(maxDowntimeMs)),
            ])
        }
        let environment = ProcessInfo.processInfo.environment
        if environment["VMSYNC_BENCH_UNSAFE_LIVE"] != nil {
            // vmsync copies memory live even where this QEMU loses TCG guests' writes doing so, as virsh --live does.
            print("cluster migration: vmsync copies memory live even where it is unsafe (allowUnsafeLiveMemoryCopy)")
            try await cluster.setMigrations(["allowUnsafeLiveMemoryCopy": true])
        }
        let virshLive = environment["VMSYNC_BENCH_VIRSH_PAUSED"] == nil
        if !virshLive {
            print("cluster migration: virsh migrates without --live (the guest paused for the memory copy)")
        }
        var damage: [String: [String]] = [:]
        var modes: [String: Int] = [:]
        try await cluster.apply(
            MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
        let sharedStorage = ProcessInfo.processInfo.environment["VMSYNC_BENCH_SHARED"] != nil
        try await cluster.apply(
            MigrationManifests.bootableVM(
                "bench-vm", storageClass: sharedStorage ? "shared" : "local", image: bed.report.guest.bootDisk),
            as: "vm.yaml")
        var vmNode = try await cluster.waitForRunning("bench-vm")

        // The twin: the agent's domain definition under another name, with its own copy of the disk.
        let twin = "bench-twin"
        let home = bed.node(vmNode)
        let twinDisk =
            sharedStorage ? bed.report.sharedDirectory + "/\(twin).qcow2" : "/var/lib/vmsync/images/\(twin).qcow2"
        try await VirshTwin.start(
            twin, like: "default_bench-vm", on: home,
            disk: [
                "/var/lib/vmsync/images/default-bench-vm-dv.qcow2",
                bed.report.sharedDirectory + "/default-bench-vm-dv.qcow2",
            ], twinDisk: twinDisk,
            hostTwinDisk: sharedStorage ? twinDisk : home.localStorage + "/images/\(twin).qcow2",
            image: bed.report.guest.bootDisk)
        var twinNode = vmNode

        let libvirtLog = ProcessInfo.processInfo.environment["VMSYNC_BENCH_LIBVIRT_LOG"]
        if let libvirtLog {
            // Experiment: libvirt's migration and monitor debug log of each node, with timestamps, into DIR/<node>.log.
            for node in bed.report.nodes {
                let admin =
                    "libvirtd:///system?socket="
                    + (node.uri.components(separatedBy: "socket=").last ?? "").replacingOccurrences(
                        of: "libvirt-sock", with: "libvirt-admin-sock")
                _ = try await TestSupport.run(
                    "/usr/bin/virt-admin",
                    [
                        "-c", admin, "daemon-log-filters",
                        "1:qemu.qemu_migration 1:qemu.qemu_process 1:qemu.qemu_monitor 1:rpc.virnetclient",
                    ])
                _ = try await TestSupport.run(
                    "/usr/bin/virt-admin", ["-c", admin, "daemon-log-outputs", "1:file:\(libvirtLog)/\(node.name).log"])
            }
        }
        var samples: [Sample] = []
        // A warm-up pair first, not counted: the twin has only just booted (a booting TCG guest takes a whole core for
        // seconds, which starved the first migration), and caches and connections are cold.
        for index in -2..<(rounds * 2) {
            let warmUp = index < 0
            let method = (warmUp ? index == -2 : [0, 3].contains(index % 4)) ? "vmsync" : "virsh"
            let here = method == "vmsync" ? vmNode : twinNode
            let there = here == "a" ? "b" : "a"
            let (source, target) = (bed.node(here), bed.node(there))
            let domain = method == "vmsync" ? "default_bench-vm" : twin
            let heartbeat = HeartbeatMonitor(paths: [
                source.imagesDirectory + "/\(domain).serial", target.imagesDirectory + "/\(domain).serial",
            ])
            guard await heartbeat.waitForTicks(5, timeout: 60) else {
                throw TestBedError("no heartbeat before migration \(index + 1)")
            }
            var sample = Sample(method: method, wall: 0, gap: 0)
            let migrationStarted = HeartbeatMonitor.monotonicNow
            let cpuBefore =
                ["a", "b"].map { cluster.agentPID($0).map(Self.cpuSeconds) ?? 0 } + [
                    cluster.controllerPID.map(Self.cpuSeconds) ?? 0
                ]
            defer {
                if method == "vmsync", ProcessInfo.processInfo.environment["VMSYNC_BENCH_VERBOSE"] != nil {
                    let cpuAfter =
                        ["a", "b"].map { cluster.agentPID($0).map(Self.cpuSeconds) ?? 0 } + [
                            cluster.controllerPID.map(Self.cpuSeconds) ?? 0
                        ]
                    print(
                        String(
                            format: "       CPU: agent a %.3f s, agent b %.3f s, controller %.3f s",
                            cpuAfter[0] - cpuBefore[0], cpuAfter[1] - cpuBefore[1], cpuAfter[2] - cpuBefore[2]))
                }
            }
            if method == "vmsync" {
                let started = Date()
                let result = try await cluster.syncctl(["migrate", "bench-vm", "--wait"])
                let exited = Date()
                sample.wall = exited.timeIntervalSince(started)
                guard result.status == 0 else {
                    throw TestBedError("syncctl migrate failed: \(result.stdout)\(result.stderr)")
                }
                let vmim = try await cluster.createdMigration(result)
                let state = vmim["status"]?["migrationState"]
                modes[state?["mode"]?.string ?? "?", default: 0] += 1
                let history = vmim["status"]?["phaseTransitionTimestamps"]?.array ?? []
                func at(_ phase: String) -> Date? {
                    (history.first { $0["phase"]?.string == phase }?["phaseTransitionTimestamp"]?.string).flatMap(
                        Migration.parseTimestamp)
                }
                let downtime = try await Self.downtime(of: "default_bench-vm", on: target.uri)
                sample.libvirtDowntimeMs = downtime.total ?? state?["downtimeMilliseconds"]?.int
                sample.downtimeWithoutNetworkMs = downtime.withoutNetwork
                let jobStart = (state?["libvirtJobStartTimestamp"]?.string).flatMap(Migration.parseTimestamp)
                let jobEnd = (state?["libvirtJobEndTimestamp"]?.string).flatMap(Migration.parseTimestamp)
                if let jobStart, let admitted = at("Pending") {
                    sample.admittedToJob = jobStart.timeIntervalSince(admitted)
                }
                if let jobStart { sample.cliToJob = jobStart.timeIntervalSince(started) }
                if let jobEnd, let succeeded = at("Succeeded") {
                    sample.jobToSucceeded = succeeded.timeIntervalSince(jobEnd)
                }
                if let jobEnd { sample.jobToCLI = exited.timeIntervalSince(jobEnd) }
                var marks = history.compactMap { entry -> (String, Date)? in
                    guard let phase = entry["phase"]?.string,
                        let time = (entry["phaseTransitionTimestamp"]?.string).flatMap(Migration.parseTimestamp)
                    else { return nil }
                    return (phase, time)
                }
                if let jobStart { marks.insert(("job start", jobStart), at: max(0, marks.count - 1)) }
                if let jobEnd { marks.insert(("job end", jobEnd), at: max(0, marks.count - 1)) }
                if ProcessInfo.processInfo.environment["VMSYNC_BENCH_VERBOSE"] != nil {
                    print(
                        "       syncctl started \(Migration.timestamp(started)), libvirt job \(state?["libvirtJobStartTimestamp"]?.string ?? "?") → \(state?["libvirtJobEndTimestamp"]?.string ?? "?"), syncctl exited \(Migration.timestamp(exited))"
                    )
                }
                sample.steps = zip(marks, marks.dropFirst()).map {
                    String(
                        format: "%@→%@ %.0f", $0.0 as NSString, $1.0 as NSString, $1.1.timeIntervalSince($0.1) * 1000)
                }
                .joined(separator: ", ")
                vmNode = there
            } else {
                if !sharedStorage {
                    try await Volumes.blank(target.localStorage + "/images/\(twin).qcow2", bytes: 64 << 20)
                }
                if let maxDowntimeMs, downtimeBoth {
                    let set = try await TestSupport.run(
                        "/usr/bin/virsh", ["-c", source.uri, "migrate-setmaxdowntime", twin, String(maxDowntimeMs)])
                    guard set.status == 0 else { throw TestBedError("virsh migrate-setmaxdowntime: \(set.stderr)") }
                }
                var arguments = (sharedStorage ? ["--unsafe"] : ["--copy-storage-all"]) + (virshLive ? ["--live"] : [])
                if ProcessInfo.processInfo.environment["VMSYNC_BENCH_VIRSH_UNIX"] != nil {
                    // Experiment: the anchor over unix sockets in the shared directory (no tunnel), as vmsync's URIs.
                    let sockets = bed.report.sharedDirectory + "/bench-\(index)"
                    try FileManager.default.createDirectory(atPath: sockets, withIntermediateDirectories: true)
                    arguments += [
                        "--migrateuri", "unix://\(sockets)/memory.sock", "--disks-uri", "unix://\(sockets)/disks.sock",
                    ]
                }
                if let parallel, ProcessInfo.processInfo.environment["VMSYNC_BENCH_PARALLEL_VMSYNC_ONLY"] == nil {
                    arguments += ["--parallel", "--parallel-connections", String(parallel)]
                }
                sample.wall = try await VirshTwin.migrate(
                    twin, from: source, to: target, directory: bed.report.directory, arguments: arguments)
                if !sharedStorage {
                    try? FileManager.default.removeItem(atPath: source.localStorage + "/images/\(twin).qcow2")
                }
                sample.libvirtDowntimeMs = try await Self.downtime(of: twin, on: target.uri).total
                twinNode = there
            }
            guard await heartbeat.waitForTick(from: 1, timeout: 20), await heartbeat.waitForTicks(5) else {
                throw TestBedError(
                    "no heartbeat after migration \(index + 1) (\(method)): \(heartbeat.analysis()); domain \(await cluster.guestReport(domain)); console lines \(heartbeat.messages.suffix(3)); consoles \(heartbeat.connections); other lines \(heartbeat.otherLines.suffix(12)); kernel damage so far \(damage)"
                )
            }
            // Each guest is moved by one method only, so what its kernel reports is that method's doing.
            let problems = heartbeat.kernelProblems
            if !problems.isEmpty {
                damage[method, default: []] += problems
                print("       \(method) guest kernel: \(problems.joined(separator: " | "))")
            }
            let analysis = heartbeat.analysis()
            if ProcessInfo.processInfo.environment["VMSYNC_BENCH_VERBOSE"] != nil,
                let (before, after) = heartbeat.largestGapTicks()
            {
                print(
                    String(
                        format:
                            "       largest gap: tick %d (socket %d, +%.3f s, uptime %.3f) → tick %d (socket %d, +%.3f s, uptime %.3f), monotonic %.3f → %.3f",
                        before.number, before.source, before.arrival - migrationStarted, before.guestUptime,
                        after.number, after.source, after.arrival - migrationStarted, after.guestUptime, before.arrival,
                        after.arrival))
            }
            heartbeat.stop()
            guard analysis.continuous else {
                throw TestBedError("migration \(index + 1): the guest did not run on: \(analysis)")
            }
            sample.gap = analysis.largestGap
            if !warmUp { samples.append(sample) }
            var line = String(
                format: "  %@ %-6@ %@→%@  wall %.3f s  guest-visible gap %.3f s",
                (warmUp ? " w" : String(format: "%2d", index + 1)) as NSString, method as NSString,
                here as NSString, there as NSString, sample.wall, sample.gap)
            if let downtime = sample.libvirtDowntimeMs { line += "  libvirt downtime \(downtime) ms" }
            if let downtime = sample.downtimeWithoutNetworkMs { line += " (w/o network \(downtime) ms)" }
            if let admitted = sample.admittedToJob, let done = sample.jobToSucceeded {
                line += String(format: "  admitted→job %.0f ms  job→Succeeded %.0f ms", admitted * 1000, done * 1000)
            }
            print(line)
            if !sample.steps.isEmpty { print("       ms: \(sample.steps)") }
        }
        if ProcessInfo.processInfo.environment["VMSYNC_BENCH_VERBOSE"] != nil {
            for node in ["a", "b"] {
                for line in cluster.agentOutput(node).split(separator: "\n") where line.contains("ms=") {
                    print("  agent \(node): \(line)")
                }
            }
        }
        await RemoveGuest.run(twin, bed: bed)
        _ = try? await cluster.syncctl(["delete", "vm", "bench-vm"])

        let ours = samples.filter { $0.method == "vmsync" }
        let theirs = samples.filter { $0.method == "virsh" }
        let wallRatio = median(ours.map(\.wall)) / median(theirs.map(\.wall))
        let gapRatio = median(ours.map(\.gap)) / median(theirs.map(\.gap))
        print(
            String(
                format:
                    "cluster migration: median wall syncctl migrate %.3f s, virsh migrate %.3f s → ratio %.3f (goal ≤ 1.10)",
                median(ours.map(\.wall)), median(theirs.map(\.wall)), wallRatio))
        print(
            String(
                format:
                    "cluster migration: median guest-visible gap vmsync %.3f s, virsh %.3f s → ratio %.3f (goal ≤ 1.10)",
                median(ours.map(\.gap)), median(theirs.map(\.gap)), gapRatio))
        print(
            "cluster migration: vmsync's memory copy \(modes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)×" }.joined(separator: ", ")), virsh's \(virshLive ? "live (--live)" : "paused (no --live)")"
        )
        print(
            "cluster migration: guest kernel damage reported (BUG/oops/lockup lines) — vmsync \(damage["vmsync"]?.count ?? 0), virsh \(damage["virsh"]?.count ?? 0)"
        )
        print(
            String(
                format:
                    "cluster migration: control plane, medians: admitted (Pending) → libvirt job %.0f ms; syncctl start → job %.0f ms; job done → Succeeded stored %.0f ms; job done → syncctl saw it %.0f ms (goal ≤ 100 ms each)",
                median(ours.compactMap(\.admittedToJob)) * 1000, median(ours.compactMap(\.cliToJob)) * 1000,
                median(ours.compactMap(\.jobToSucceeded)) * 1000, median(ours.compactMap(\.jobToCLI)) * 1000))
    }

    /// libvirt's completed-job downtime on the destination: total, and without network time.
    static func downtime(of domain: String, on uri: String) async throws -> (total: Int64?, withoutNetwork: Int64?) {
        let info = try await TestSupport.run("/usr/bin/virsh", ["-c", uri, "domjobinfo", "--completed", domain])
        func field(_ name: String) -> Int64? {
            guard let line = info.stdout.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return nil }
            return Int64(
                line.dropFirst(name.count).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
        }
        if ProcessInfo.processInfo.environment["VMSYNC_BENCH_VERBOSE"] != nil {
            let wanted = [
                "Time elapsed:", "Data processed:", "Memory processed:", "Memory bandwidth:", "Iteration:",
                "Memory iteration:", "Disk processed:", "Total downtime:",
            ]
            let lines = info.stdout.split(separator: "\n").filter { line in wanted.contains { line.hasPrefix($0) } }
            print(
                "       \(domain) completed job: "
                    + lines.map {
                        $0.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }.joined(
                            separator: " ")
                    }.joined(separator: ", "))
        }
        return (field("Total downtime:"), field("Downtime w/o network:"))
    }

    /// User + system CPU seconds of a process.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// Disk images for the twin, with qemu-img.
    enum Volumes {
        static func copy(_ image: String, to path: String, bytes: Int) async throws {
            try? FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            var result = try await TestSupport.run("/usr/bin/qemu-img", ["convert", "-O", "qcow2", image, path])
            guard result.status == 0 else { throw TestBedError("qemu-img convert: \(result.stdout)\(result.stderr)") }
            result = try await TestSupport.run(
                "/usr/bin/qemu-img", ["resize", "-q", "-f", "qcow2", path, String(bytes)])
            guard result.status == 0 else { throw TestBedError("qemu-img resize: \(result.stdout)\(result.stderr)") }
        }

        static func blank(_ path: String, bytes: Int) async throws {
            try? FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let result = try await TestSupport.run(
                "/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", path, String(bytes)])
            guard result.status == 0 else { throw TestBedError("qemu-img create: \(result.stdout)\(result.stderr)") }
        }
    }
}
