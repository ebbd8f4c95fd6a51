import ClusterAPI
import ClusterBed
import ClusterClient
import Foundation
import Hypervisor
import TestBed
import TestSupport

/// A guest libvirt migrates by itself, beside a vmsync VM: the anchor of the migration benchmarks. Its definition is
/// the vmsync domain's under another name, with its own copy of the disk, MAC and console.
enum VirshTwin {
    /// Defines and starts `twin` on `node` from `domain`'s migratable XML there: `disk` (the VM's disk path inside the
    /// node) becomes `twinDisk`, whose file (seen from the host at `hostTwinDisk`) is a fresh copy of `image`.
    static func start(
        _ twin: String, like domain: String, on node: TestBedNode, disk: [String], twinDisk: String,
        hostTwinDisk: String, image: String
    ) async throws {
        let connection = try await Connection.open(node.uri)
        let xml = try await connection.domain(named: domain).xml(migratable: true)
        try await ClusterMigrationBenchmark.Volumes.copy(image, to: hostTwinDisk, bytes: 64 << 20)
        var twinXML = xml.replacingOccurrences(of: "<name>\(domain)</name>", with: "<name>\(twin)</name>")
            .replacingOccurrences(of: #"<uuid>[^<]*</uuid>"#, with: "", options: .regularExpression)
            .replacingOccurrences(of: "\(domain).serial", with: "\(twin).serial")
            .replacingOccurrences(
                of: #"<mac address='[^']*'/>"#, with: "<mac address='02:00:00:be:0c:01'/>", options: .regularExpression)
        for path in disk { twinXML = twinXML.replacingOccurrences(of: path, with: twinDisk) }
        try await connection.define(xml: twinXML, name: twin).start()
        await connection.close()
    }

    /// `virsh migrate --p2p --persistent --undefinesource --xml … TWIN TARGET` plus `arguments` (the copy and memory
    /// modes): its console moved to the target's run directory. Returns the command's wall time.
    static func migrate(
        _ twin: String, from source: TestBedNode, to target: TestBedNode, directory: String, arguments: [String]
    ) async throws -> Double {
        let connection = try await Connection.open(source.uri)
        let destination = try await connection.domain(named: twin).xml(migratable: true)
            .replacingOccurrences(of: source.imagesDirectory, with: target.imagesDirectory)
        await connection.close()
        let xmlPath = directory + "/\(twin)-destination.xml"
        try destination.write(toFile: xmlPath, atomically: true, encoding: .utf8)
        let started = Date()
        let result = try await TestSupport.run(
            "/usr/bin/virsh",
            [
                "-c", source.uri, "migrate", "--p2p", "--persistent", "--undefinesource", "--xml", xmlPath, twin,
                target.uri,
            ]
                + arguments, timeout: 300)
        let wall = Date().timeIntervalSince(started)
        guard result.status == 0 else { throw TestBedError("virsh migrate failed: \(result.stderr)") }
        return wall
    }
}

/// A decentralized migration between two clusters on a 2-node bed (alpha on node a, beta on node b: the sync
/// endpoints, the mirror, the agents' tunnels trusting the peer cluster's CA) against `virsh migrate --p2p
/// --copy-storage-all` of a twin guest between the same two libvirt daemons, alternating (ABBA), each moved back and
/// forth. vmsync's wall time runs from the two VMIMs' creation to both sides Succeeded (the target VM and its blank
/// DataVolume are made beforehand, as seed 001 does); both sides copy memory the same way (live, or paused where this
/// QEMU loses a TCG guest's writes copying it live). Reported as ratios of medians: wall and guest-visible gap.
///
/// With `gateway` each cluster takes its incoming moves through its one-port gateway (`crossClusterGateway`): the
/// streams make one more mutual-TLS hop, through the target cluster's controller host.
enum CrossClusterMigrationBenchmark {
    static func run(rounds: Int, gateway: Bool = false) async throws {
        print(
            "cross-cluster migration: a 2-node bed, cluster alpha on a and cluster beta on b"
                + (gateway ? "; the streams through the target cluster's gateway" : "; the streams agent to agent"))
        let bed = try await TestBed.start(nodes: 2)
        do {
            let alpha = try await BedCluster.start(
                bed, on: ["a"], name: "alpha", syncPort: 9185, gatewayPort: gateway ? 9187 : nil)
            defer { alpha.stopAll() }
            let beta = try await BedCluster.start(
                bed, on: ["b"], name: "beta", syncPort: 9285, gatewayPort: gateway ? 9287 : nil)
            defer { beta.stopAll() }
            try await CrossCluster.pair(alpha, beta)
            if gateway {
                try await CrossCluster.useGateway(alpha)
                try await CrossCluster.useGateway(beta)
            }
            try await measure(bed: bed, clusters: ["a": alpha, "b": beta], rounds: rounds)
        } catch {
            await bed.stop()
            throw error
        }
        await bed.stop()
    }

    private static func measure(bed: TestBed, clusters: [String: BedCluster], rounds: Int) async throws {
        let vm = CrossCluster.vmName
        let domain = "default_\(vm)"
        let image = bed.report.guest.bootDisk
        guard let alpha = clusters["a"] else { return }
        try await alpha.apply(MigrationManifests.seedVM(image: image), as: "bench-alpha.yaml")
        var vmNode = try await alpha.waitForRunning(vm)
        let libvirt = try await Connection.open(bed.node("a").uri)
        let hazard = MemoryCopy.liveCopyHazard(accelerator: .qemu, qemu: try await libvirt.hypervisorVersion())
        await libvirt.close()
        let twin = "bench-twin"
        try await VirshTwin.start(
            twin, like: domain, on: bed.node("a"), disk: ["/var/lib/vmsync/images/default-\(vm)-dv.qcow2"],
            twinDisk: "/var/lib/vmsync/images/\(twin).qcow2",
            hostTwinDisk: bed.node("a").localStorage + "/images/\(twin).qcow2", image: image)
        var twinNode = "a"
        print(
            "cross-cluster migration: memory copied \(hazard == nil ? "live on both sides" : "with the guest paused on both sides (vmsync: \(hazard ?? ""); virsh: no --live)")"
        )
        var samples: [(method: String, wall: Double, gap: Double)] = []
        for index in -2..<(rounds * 2) {
            let warmUp = index < 0
            let method = (warmUp ? index == -2 : [0, 3].contains(index % 4)) ? "vmsync" : "virsh"
            let here = method == "vmsync" ? vmNode : twinNode
            let there = here == "a" ? "b" : "a"
            let (source, target) = (bed.node(here), bed.node(there))
            let name = method == "vmsync" ? domain : twin
            let heartbeat = HeartbeatMonitor(paths: [
                source.imagesDirectory + "/\(name).serial", target.imagesDirectory + "/\(name).serial",
            ])
            defer { heartbeat.stop() }
            guard await heartbeat.waitForTicks(5, timeout: 60) else {
                throw TestBedError("no heartbeat before migration \(index + 1)")
            }
            let wall: Double
            if method == "vmsync" {
                guard let from = clusters[here], let to = clusters[there] else { return }
                wall = try await move(vm, from: from, to: to, round: index + 3)
                vmNode = there
            } else {
                try await ClusterMigrationBenchmark.Volumes.blank(
                    target.localStorage + "/images/\(twin).qcow2", bytes: 64 << 20)
                wall = try await VirshTwin.migrate(
                    twin, from: source, to: target, directory: bed.report.directory,
                    arguments: ["--copy-storage-all"] + (hazard == nil ? ["--live"] : []))
                try? FileManager.default.removeItem(atPath: source.localStorage + "/images/\(twin).qcow2")
                twinNode = there
            }
            guard await heartbeat.waitForTick(from: 1, timeout: 20), await heartbeat.waitForTicks(5) else {
                throw TestBedError("no heartbeat after migration \(index + 1) (\(method)): \(heartbeat.analysis())")
            }
            let analysis = heartbeat.analysis()
            guard analysis.continuous else {
                throw TestBedError("migration \(index + 1) (\(method)): the guest did not run on: \(analysis)")
            }
            if !warmUp { samples.append((method, wall, analysis.largestGap)) }
            let downtime = try await ClusterMigrationBenchmark.downtime(of: name, on: target.uri).total
            print(
                String(
                    format: "  %@ %-6@ %@→%@  wall %.3f s  guest-visible gap %.3f s  libvirt downtime %@ ms",
                    (warmUp ? " w" : String(format: "%2d", index + 1)) as NSString, method as NSString,
                    here as NSString, there as NSString, wall, analysis.largestGap,
                    (downtime.map(String.init) ?? "?") as NSString))
        }
        await RemoveGuest.run(twin, bed: bed)
        let ours = samples.filter { $0.method == "vmsync" }
        let theirs = samples.filter { $0.method == "virsh" }
        let median = ClusterMigrationBenchmark.median
        print(
            String(
                format:
                    "cross-cluster migration: median wall vmsync (both VMIMs → both Succeeded) %.3f s, virsh migrate %.3f s → ratio %.3f (goal ≤ 1.10)",
                median(ours.map(\.wall)), median(theirs.map(\.wall)),
                median(ours.map(\.wall)) / median(theirs.map(\.wall))))
        print(
            String(
                format:
                    "cross-cluster migration: median guest-visible gap vmsync %.3f s, virsh %.3f s → ratio %.3f (goal ≤ 1.10)",
                median(ours.map(\.gap)), median(theirs.map(\.gap)), median(ours.map(\.gap)) / median(theirs.map(\.gap)))
        )
    }

    /// One decentralized move (`CrossCluster.move`), and where its time went: each side's phases and the libvirt job,
    /// in ms from the first create.
    static func move(_ vm: String, from source: BedCluster, to target: BedCluster, round: Int) async throws -> Double {
        let (started, ended) = try await CrossCluster.move(
            vm, from: source, to: target, id: "bench-\(round)", names: ("source-\(round)", "target-\(round)"))
        var marks: [(String, Date)] = []
        for (cluster, name, side) in [(source, "source-\(round)", "s"), (target, "target-\(round)", "t")] {
            let vmim = try await cluster.admin.get(Kinds.migration, name: name)
            for entry in vmim["status"]?["phaseTransitionTimestamps"]?.array ?? [] {
                if let phase = entry["phase"]?.string,
                    let time = entry["phaseTransitionTimestamp"]?.string.flatMap(Migration.parseTimestamp)
                {
                    marks.append(("\(side):\(phase)", time))
                }
            }
            let state = vmim["status"]?["migrationState"]
            for field in ["libvirtJobStartTimestamp", "libvirtJobEndTimestamp"] {
                if let time = state?[field]?.string.flatMap(Migration.parseTimestamp) {
                    marks.append(("\(side):\(field)", time))
                }
            }
        }
        print(
            "       ms: "
                + marks.sorted { $0.1 < $1.1 }.map { "\($0.0) \(Int($0.1.timeIntervalSince(started) * 1000))" }.joined(
                    separator: ", "))
        if ProcessInfo.processInfo.environment["VMSYNC_BENCH_VERBOSE"] != nil {
            // The agents' own step timings of this move (the newest lines of each kind).
            for (cluster, needle) in [(target, "migration target ready"), (source, "migration started")] {
                for node in cluster.nodeNames {
                    if let line = cluster.agentOutput(node).split(separator: "\n").last(where: { $0.contains(needle) })
                    {
                        print("       \(node): \(line.suffix(400))")
                    }
                }
            }
        }
        return ended.timeIntervalSince(started)
    }
}
