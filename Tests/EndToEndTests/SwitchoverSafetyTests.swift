import BedTesting
import ClusterAPI
import ClusterBed
import ClusterClient
import Foundation
import Hypervisor
import TestBed
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension EndToEnd {
    /// Whatever fails around a migration — the controller stopped, killed or cut off, an agent killed — the guest is
    /// never lost and never doubled: exactly one running domain, the VMI on the node that runs it, its heartbeat
    /// continuous, nothing of the migration left on the other node.
    @Suite(
        "Switchover safety: one running guest whatever fails", .serialized, .enabled(if: canRunTestBed),
        .testBed(nodes: 2))
    struct SwitchoverSafetyTests {
        @Test(
            "the controller is stopped (SIGSTOP) during the memory copy and continued after the source domain is gone")
        func controllerStoppedDuringCopy() async throws {
            try await SafetyScenario.run("frozen-vm", bandwidth: "64Mi") { scenario in
                try await scenario.waitForJob(.memory)
                scenario.cluster.setControllerRunning(false)
                try await scenario.waitUntilGone(from: scenario.source)
                // Longer than the agents' request timeout: their writes to the stopped controller fail meanwhile.
                try await Task.sleep(for: .seconds(scenario.cluster.apiTimeout * 2))
                scenario.cluster.setControllerRunning(true)
            }
        }

        @Test(
            "kill -9 of the controller right after a phase, restarted",
            arguments: ["Scheduled", "TargetReady", "Running"])
        func controllerKilled(after phase: String) async throws {
            try await SafetyScenario.run("ctl-\(phase.lowercased())-vm", bandwidth: "32Mi") { scenario in
                try await scenario.waitForPhase(phase)
                await scenario.cluster.killController()
                if phase == "Running" {
                    // Down until libvirt's job is done: the hand-over has to wait for the controller.
                    try await scenario.waitUntilGone(from: scenario.source)
                } else {
                    try await Task.sleep(for: .seconds(2))
                }
                try await scenario.cluster.startController()
            }
        }

        @Test(
            "kill -9 of the target's agent while it prepares the disks (the moment the incoming disk exists), restarted"
        )
        func targetAgentKilledPreparing() async throws {
            try await SafetyScenario.run("tgt-prep-vm", bandwidth: "32Mi") { scenario in
                let disk = scenario.bed.node(scenario.target).localStorage + "/images/default-\(scenario.vm)-dv.qcow2"
                let deadline = Date().addingTimeInterval(60)
                while !FileManager.default.fileExists(atPath: disk) {
                    guard Date() < deadline else {
                        throw TestBedError("no incoming disk appeared on \(scenario.target)")
                    }
                    usleep(1_000)
                }
                await scenario.cluster.killAgent(scenario.target)
                scenario.note("killed while \(try await scenario.phase())")
                try scenario.cluster.startAgent(scenario.target)
            }
        }

        @Test("kill -9 of the target's agent while Running (the disk being copied), restarted")
        func targetAgentKilledRunning() async throws {
            try await SafetyScenario.run("tgt-run-vm", bandwidth: "16Mi") { scenario in
                try await scenario.waitForJob(.disks)
                await scenario.cluster.killAgent(scenario.target)
                try await Task.sleep(for: .seconds(1))
                try scenario.cluster.startAgent(scenario.target)
            }
        }

        @Test(
            "kill -9 of the source's agent at the switchover: libvirt moved the guest, the hand-over never left the source (the controller was stopped), the agent restarted"
        )
        func sourceAgentKilledAtSwitchover() async throws {
            try await SafetyScenario.run("src-kill-vm", bandwidth: "64Mi") { scenario in
                try await scenario.waitForJob(.memory)
                scenario.cluster.setControllerRunning(false)
                try await scenario.waitUntilGone(from: scenario.source)
                await scenario.cluster.killAgent(scenario.source)
                try scenario.cluster.startAgent(scenario.source)
                try await Task.sleep(for: .seconds(1))
                scenario.cluster.setControllerRunning(true)
            }
        }

        @Test(
            "the link between the source's agent and the controller is cut while Running (the nodes still reach each other): the target claims the guest during the cut"
        )
        func sourceControllerLinkCut() async throws {
            try await SafetyScenario.run("cut-vm", bandwidth: "32Mi", controllerLinks: true) { scenario in
                try await scenario.waitForPhase("Running")
                try scenario.cluster.setControllerLink(of: scenario.source, up: false)
                try await scenario.waitUntilGone(from: scenario.source)
                let claimed = try await scenario.cluster.waitFor(
                    "the target claims the guest while the source is cut off", timeout: 40
                ) {
                    let vmi = try await scenario.cluster.admin.get(Kinds.virtualMachineInstance, name: scenario.vm)
                    return vmi["status"]?["nodeName"]?.string == scenario.target ? vmi : nil
                }
                #expect(
                    claimed["status"]?["migrationState"]?["completed"] == true,
                    "\(claimed["status"]?["migrationState"] ?? .null)")
                try scenario.cluster.setControllerLink(of: scenario.source, up: true)
            }
        }

        @Test(
            "a VM deleted while its node is cut off from the controller stops when the node is back: the agent removes domains no VMI claims"
        )
        func orphanRemovedAfterPartition() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed, controllerLinks: true)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("orphan-vm", storageClass: "local", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            let node = try await cluster.waitForRunning("orphan-vm")
            let libvirt = try await Connection.open(bed.node(node).uri)
            defer { Task { await libvirt.close() } }
            #expect(try await libvirt.domain(named: "default_orphan-vm").presence() == .live)
            try cluster.setControllerLink(of: node, up: false)
            let deleted = try await cluster.syncctl(["delete", "vm", "orphan-vm"])
            #expect(deleted.status == 0, "\(deleted.stderr)")
            _ = try await cluster.waitFor("the VMI gone from the store", timeout: 60) { () async throws -> Bool? in
                do {
                    _ = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "orphan-vm")
                    return nil
                } catch {
                    return (error as? APIError)?.code == 404 ? true : nil
                }
            }
            // Cut off, the node cannot know: its guest still runs.
            try await Task.sleep(for: .seconds(2))
            #expect(
                try await libvirt.domain(named: "default_orphan-vm").presence() == .live,
                "nothing acts while the node is cut off")
            try cluster.setControllerLink(of: node, up: true)
            let gone = try await cluster.waitFor("the orphaned domain removed", timeout: 60) {
                () async throws -> Bool? in
                try await libvirt.domainNames().contains("default_orphan-vm") ? nil : true
            }
            #expect(gone)
            // The agent says why: it saw the deletion when its watch resumed (the change feed kept it), or, when the
            // feed had moved past it, found a domain that no VMI claims.
            let output = cluster.agentOutput(node)
            #expect(
                output.contains("removed a domain that no VMI claims")
                    || output.contains("domain stopped for deleted VMI"), "the agent says why")
        }
    }
}

/// One migration with a fault injected while it runs, and the checks every such case must pass afterwards.
final class SafetyScenario: @unchecked Sendable {
    let bed: TestBed
    let cluster: BedCluster
    let vm: String
    let source: String
    let target: String
    let migrationName: String
    private var notes: [String] = []

    private init(bed: TestBed, cluster: BedCluster, vm: String, source: String, target: String, migrationName: String) {
        self.bed = bed
        self.cluster = cluster
        self.vm = vm
        self.source = source
        self.target = target
        self.migrationName = migrationName
    }

    var domainName: String { "default_\(vm)" }

    func note(_ text: String) { notes.append(text) }

    /// Boots `vm` (a local DataVolume: its disk is copied), starts its migration with `bandwidth`, runs `fault`,
    /// then checks: the migration ends; exactly one running domain — never two at any sampled moment — on the
    /// node the VMI names; nothing of the VM or the migration on the other node; the heartbeat continuous there.
    static func run(
        _ vm: String, bandwidth: String, controllerLinks: Bool = false, fault: (SafetyScenario) async throws -> Void
    ) async throws {
        let bed = try currentBed()
        let cluster = try await BedCluster.start(bed, controllerLinks: controllerLinks)
        defer {
            // The daemons' logs, for a failure's post-mortem (the agents of restarted processes keep only the latest).
            let logs = FileManager.default.temporaryDirectory.appendingPathComponent("vmsync-safety-logs")
            try? FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
            try? cluster.allOutput.write(
                to: logs.appendingPathComponent("\(vm).log"), atomically: true, encoding: .utf8)
            cluster.stopAll()
        }
        try await cluster.apply(
            MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
        try await cluster.apply(
            MigrationManifests.bootableVM(vm, storageClass: "local", image: bed.report.guest.bootDisk), as: "\(vm).yaml"
        )
        let source = try await cluster.waitForRunning(vm)
        let target = source == "a" ? "b" : "a"
        let heartbeat = HeartbeatMonitor(paths: [
            bed.node(source).imagesDirectory + "/default_\(vm).serial",
            bed.node(target).imagesDirectory + "/default_\(vm).serial",
        ])
        defer { heartbeat.stop() }
        #expect(await heartbeat.waitForTicks(3, timeout: 60), "\(vm) ticks on \(source)")
        try await cluster.setMigrations(["bandwidthPerMigration": .string(bandwidth)])
        let census = try await GuestCensus.start(bed: bed, domain: "default_\(vm)")
        defer { census.stop() }
        let result = try await cluster.syncctl(["migrate", vm])
        #expect(result.status == 0, "\(result.stderr)")
        let created = try await cluster.createdMigration(result)
        let scenario = SafetyScenario(
            bed: bed, cluster: cluster, vm: vm, source: source, target: target,
            migrationName: created["metadata"]?["name"]?.string ?? "")

        try await fault(scenario)

        let ended = try await cluster.waitFor("migration \(scenario.migrationName) ended", timeout: 120) {
            () async throws -> JSONValue? in
            let object = try await cluster.admin.get(Kinds.migration, name: scenario.migrationName)
            return Migration.finalPhases.contains(object["status"]?["phase"]?.string ?? "") ? object : nil
        }
        let phase = ended["status"]?["phase"]?.string ?? ""
        // Where the guest runs decides where the VMI must be; give the agents a moment to agree.
        let home = try await cluster.waitFor("one running guest, and the VMI on its node", timeout: 60) {
            () async throws -> String? in
            let live = try await census.liveNodes()
            guard live.count == 1, let node = live.first else { return nil }
            let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: vm)
            return vmi["status"]?["nodeName"]?.string == node && vmi["status"]?["phase"]?.string == "Running"
                ? node : nil
        }
        let other = home == source ? target : source
        print(
            "\(vm): migration \(phase), guest on \(home) (from \(source)); \(scenario.notes.joined(separator: "; ")); census: \(census.summary)"
        )
        #expect(census.mostLive <= 1, "never two running copies: \(census.summary)")
        #expect(
            phase == (home == target ? "Succeeded" : "Failed"),
            "the record agrees with where the guest runs: \(phase), guest on \(home); \(ended["status"]?["conditions"] ?? .null)"
        )
        // Nothing of the VM on the other node: no domain (not even a stopped one), no disk, no migration sockets.
        let uid = ended["metadata"]?["uid"]?.string ?? "?"
        let otherNode = bed.node(other)
        let leftovers = try await cluster.waitFor("nothing of \(vm) left on \(other)", timeout: 30) {
            () async throws -> Bool? in
            let libvirt = try await Connection.open(otherNode.uri)
            let names = try await libvirt.domainNames()
            await libvirt.close()
            let disk = otherNode.localStorage + "/images/default-\(vm)-dv.qcow2"
            let sockets = otherNode.localStorage + "/migrations/\(uid)"
            return !names.contains("default_\(vm)") && !FileManager.default.fileExists(atPath: disk)
                && !FileManager.default.fileExists(atPath: sockets) ? true : nil
        }
        #expect(leftovers)
        // The guest ran on throughout: ticks from its node's console after everything, none lost, no restart.
        let console = home == source ? 0 : 1
        let after = HeartbeatMonitor.monotonicNow
        let deadline = Date().addingTimeInterval(30)
        while !heartbeat.ticks.contains(where: { $0.arrival > after && $0.source == console }) && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        let report = await cluster.guestReport(scenario.domainName)
        #expect(
            heartbeat.ticks.contains { $0.arrival > after && $0.source == console },
            "the guest ticks on \(home): \(heartbeat.analysis()); \(report)")
        #expect(heartbeat.analysis().continuous, "\(heartbeat.report)")
        #expect(heartbeat.kernelProblems.isEmpty, "the guest kernel reports damage: \(heartbeat.kernelProblems)")
        _ = try await cluster.syncctl(["delete", "vm", vm])
        _ = try await cluster.waitFor("\(vm) gone from every node", timeout: 60) { () async throws -> Bool? in
            try await census.liveNodes().isEmpty ? true : nil
        }
    }

    /// Waits until the migration has reached `phase` (or gone past it), as a watch of migrations reports it.
    func waitForPhase(_ phase: String, timeout: TimeInterval = 60) async throws {
        let order = [
            "Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", "Succeeded", "Failed",
        ]
        let wanted = order.firstIndex(of: phase) ?? 0
        func reached(_ object: JSONValue) -> Bool {
            (order.firstIndex(of: object["status"]?["phase"]?.string ?? "") ?? -1) >= wanted
        }
        let list = try await cluster.admin.list(Kinds.migration, namespace: "default")
        if (list["items"]?.array ?? []).contains(where: {
            $0["metadata"]?["name"]?.string == migrationName && reached($0)
        }) {
            return
        }
        let events = try await cluster.admin.watch(
            Kinds.migration, namespace: "default", resourceVersion: list["metadata"]?["resourceVersion"]?.string,
            timeoutSeconds: Int(timeout))
        for try await event in events
        where event.object["metadata"]?["name"]?.string == migrationName && reached(event.object) {
            note("\(phase) seen as \(event.object["status"]?["phase"]?.string ?? "?")")
            return
        }
        throw TestBedError("migration \(migrationName) did not reach \(phase) within \(Int(timeout)) s")
    }

    /// What a libvirt migration job copies.
    enum JobStage { case disks, memory }

    /// Waits until the source's libvirt job copies `stage` (disks, then memory), polling libvirt itself.
    func waitForJob(_ stage: JobStage, timeout: TimeInterval = 60) async throws {
        let libvirt = try await Connection.open(bed.node(source).uri)
        defer { Task { await libvirt.close() } }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let domain = try? await libvirt.domain(named: domainName),
                let statistics = try? await domain.jobStatistics()
            {
                switch (statistics.phase, stage) {
                case (.disks, .disks), (.memory, .memory):
                    note("job in \(statistics.phase)")
                    return
                default: break
                }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestBedError("the job of \(domainName) did not reach \(stage) within \(Int(timeout)) s")
    }

    /// Waits until `node`'s libvirt no longer runs the guest (the migration's job finished there).
    func waitUntilGone(from node: String, timeout: TimeInterval = 90) async throws {
        let libvirt = try await Connection.open(bed.node(node).uri)
        defer { Task { await libvirt.close() } }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let domain = try? await libvirt.domain(named: domainName), (try? await domain.presence()) != .inactive
            else {
                note("gone from \(node)")
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestBedError("\(domainName) still runs on \(node) after \(Int(timeout)) s")
    }

    /// The migration's phase now.
    func phase() async throws -> String {
        try await cluster.admin.get(Kinds.migration, name: migrationName)["status"]?["phase"]?.string ?? ""
    }
}

/// Samples every node's libvirt for one domain, ten times a second: how many nodes ran it at once.
final class GuestCensus: @unchecked Sendable {
    private let lock = NSLock()
    private var most = 0
    private var samples = 0
    private var stopped = false
    private let connections: [(String, Connection)]
    private let domain: String

    private init(connections: [(String, Connection)], domain: String) {
        self.connections = connections
        self.domain = domain
    }

    static func start(bed: TestBed, domain: String) async throws -> GuestCensus {
        var connections: [(String, Connection)] = []
        for node in bed.report.nodes { connections.append((node.name, try await Connection.open(node.uri))) }
        let census = GuestCensus(connections: connections, domain: domain)
        Task.detached { await census.sample() }
        return census
    }

    /// The nodes on which the domain holds a live guest now.
    func liveNodes() async throws -> [String] {
        var live: [String] = []
        for (name, connection) in connections {
            if let domain = try? await connection.domain(named: domain), (try? await domain.presence()) == .live {
                live.append(name)
            }
        }
        return live
    }

    var mostLive: Int { lock.withLock { most } }
    var summary: String {
        lock.withLock {
            "at most \(most) running copies in \(samples) samples\(doubled.map { " (first doubled: \($0))" } ?? "")"
        }
    }
    private var doubled: String?

    func stop() {
        lock.withLock { stopped = true }
    }

    private func sample() async {
        while !lock.withLock({ stopped }) {
            if let live = try? await liveNodes() {
                var detail: String?
                if live.count > 1 {
                    var states: [String] = []
                    for (name, connection) in connections {
                        let reason = try? await TestSupport.run(
                            "/usr/bin/virsh", ["-c", connection.uri, "domstate", "--reason", self.domain])
                        states.append(
                            "\(name): \(reason?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?")")
                    }
                    detail = states.joined(separator: ", ")
                }
                lock.withLock {
                    most = max(most, live.count)
                    samples += 1
                    if let detail, doubled == nil { doubled = detail }
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        for (_, connection) in connections { await connection.close() }
    }
}
