import BedTesting
import ClusterAPI
import ClusterBed
import ClusterClient
import Foundation
import Hypervisor
import TLSTransport
import TestBed
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension EndToEnd {
    /// Live migration inside one cluster: VMIM phases, the agents' mTLS tunnels, aborts, timeouts, drain.
    @Suite(
        "Live migration in a cluster: VMIMs, tunnels between agents", .serialized, .enabled(if: canRunTestBed),
        .testBed(nodes: 2))
    struct MigrationBedTests {
        @Test(
            "syncctl migrate moves a running guest with a local disk (block-copied) and one on shared storage (not copied): no tick lost, disk identical, phases and migrationState recorded"
        )
        func migrateLocalAndShared() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            let shared = bed.report.sharedDirectory + "/images-\(UUID().uuidString.prefix(6))"
            try await cluster.apply(MigrationManifests.storageClasses(sharedDirectory: shared), as: "classes.yaml")
            for (vm, storageClass) in [("local-vm", "local"), ("shared-vm", "shared")] {
                try await cluster.apply(
                    MigrationManifests.bootableVM(vm, storageClass: storageClass, image: bed.report.guest.bootDisk),
                    as: "\(vm).yaml")
            }
            for (vm, storageClass) in [("local-vm", "local"), ("shared-vm", "shared")] {
                let source = try await cluster.waitForRunning(vm)
                let target = source == "a" ? "b" : "a"
                let domainName = "default_\(vm)"
                let heartbeat = HeartbeatMonitor(paths: [
                    bed.node(source).imagesDirectory + "/\(domainName).serial",
                    bed.node(target).imagesDirectory + "/\(domainName).serial",
                ])
                defer { heartbeat.stop() }
                #expect(await heartbeat.waitForTicks(5, timeout: 60), "\(vm) ticks on \(source)")
                let disk =
                    storageClass == "local"
                    ? "/var/lib/vmsync/images/default-\(vm)-dv.qcow2" : "\(shared)/default-\(vm)-dv.qcow2"
                let sourceDisk =
                    storageClass == "local" ? bed.node(source).localStorage + "/images/default-\(vm)-dv.qcow2" : disk
                let targetDisk =
                    storageClass == "local" ? bed.node(target).localStorage + "/images/default-\(vm)-dv.qcow2" : disk
                let before = try await GuestDisk.contents(of: sourceDisk).prefix(GuestDisk.staticRegion)

                let result = try await cluster.syncctl(["migrate", vm, "--wait"])
                #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
                #expect(result.stdout.contains("now runs on \(target)"), "\(result.stdout)")
                let name = try #require(
                    result.stdout.split(separator: "\n").first?.split(separator: "/").last.map(String.init)?
                        .replacingOccurrences(of: " created", with: ""))
                #expect(name.count == vm.count + 6 && name.hasPrefix(vm + "-"), "named <vm>-xxxxx: \(name)")

                #expect(await heartbeat.waitForTick(from: 1, timeout: 20), "ticks come from \(target)'s console")
                #expect(await heartbeat.waitForTicks(5))
                let analysis = heartbeat.analysis()
                #expect(analysis.continuous, "\(vm): \(analysis)")
                print("\(vm) (\(storageClass)): \(analysis)")

                let vmim = try await cluster.admin.get(Kinds.migration, name: name)
                let phases = (vmim["status"]?["phaseTransitionTimestamps"]?.array ?? []).compactMap {
                    $0["phase"]?.string
                }
                #expect(
                    phases == [
                        "Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", "Succeeded",
                    ], "\(phases)")
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: vm)
                let state = try #require(vmi["status"]?["migrationState"])
                #expect(vmi["status"]?["nodeName"]?.string == target && vmi["status"]?["phase"] == "Running")
                #expect(state["sourceNode"]?.string == source && state["targetNode"]?.string == target, "\(state)")
                #expect(state["completed"] == true && state["failed"] == false, "\(state)")
                #expect(
                    state["migrationUID"] == vmim["metadata"]?["uid"]
                        && state["migrationUid"] == vmim["metadata"]?["uid"])
                // The bed's guests run under TCG: on a QEMU whose live copy loses their writes they are paused for it.
                let libvirt = try await Connection.open(bed.node(source).uri)
                let hazard = MemoryCopy.liveCopyHazard(accelerator: .qemu, qemu: try await libvirt.hypervisorVersion())
                await libvirt.close()
                let mode = hazard == nil ? "PreCopy" : "Paused"
                #expect(
                    state["startTimestamp"]?.string != nil && state["endTimestamp"]?.string != nil
                        && state["mode"]?.string == mode, "\(state)")
                let paused = (vmim["status"]?["conditions"]?.array ?? []).first { $0["type"] == "MemoryCopyPaused" }
                #expect(
                    hazard == nil
                        ? paused == nil
                        : paused?["status"] == "True" && paused?["message"]?.string?.contains("QEMU") == true,
                    "\(vmim["status"]?["conditions"] ?? [])")
                #expect(vmim["status"]?["migrationState"]?["mode"]?.string == mode)
                #expect(
                    heartbeat.kernelProblems.isEmpty,
                    "\(vm): the guest kernel reports damage after the migration: \(heartbeat.kernelProblems)")
                #expect(state["progress"]?["dataTotalBytes"]?.int ?? 0 > 0, "progress was published: \(state)")
                // libvirt's downtime and totals reach the migration's record right after the handover.
                let record = try await cluster.waitFor("libvirt's completed statistics in \(name)", timeout: 30) {
                    try await cluster.admin.get(Kinds.migration, name: name)["status"]?["migrationState"].flatMap {
                        $0["downtimeMilliseconds"]?.int != nil ? $0 : nil
                    }
                }
                #expect(
                    (record["downtimeMilliseconds"]?.int ?? -1) >= 0 && record["progress"]?["phase"] == "Completed",
                    "\(record)")

                // The disk: copied for local storage (the source's copy gone), the same file for shared storage.
                let after = try await GuestDisk.contents(of: targetDisk).prefix(GuestDisk.staticRegion)
                #expect(after == before, "\(vm): the static region is identical on \(target)")
                if storageClass == "local" {
                    #expect(!FileManager.default.fileExists(atPath: sourceDisk), "the source's copy is removed")
                    let dataVolume = try await cluster.waitFor("DataVolume follows its VMI") {
                        let object = try await cluster.admin.get(Kinds.dataVolume, name: "\(vm)-dv")
                        return object["status"]?["nodeName"]?.string == target ? object : nil
                    }
                    #expect(dataVolume["status"]?["nodeName"]?.string == target)
                }
                let sourceLibvirt = try await Connection.open(bed.node(source).uri)
                #expect(try await !sourceLibvirt.domainNames().contains(domainName), "nothing left on \(source)")
                await sourceLibvirt.close()
                let get = try await cluster.syncctl(["get", "vmi", vm])
                #expect(get.stdout.contains(target), "\(get.stdout)")
            }
            for vm in ["local-vm", "shared-vm"] { _ = try await cluster.syncctl(["delete", "vm", vm]) }
        }

        @Test(
            "parallelMigrationConnections: memory over several tunnelled connections (QEMU multifd), there and back, no tick lost, disk identical"
        )
        func parallelConnections() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("multi-vm", storageClass: "local", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            try await cluster.setMigrations(["parallelMigrationConnections": 3])
            var here = try await cluster.waitForRunning("multi-vm")
            let first = try await GuestDisk.contents(
                of: bed.node(here).localStorage + "/images/default-multi-vm-dv.qcow2"
            ).prefix(GuestDisk.staticRegion)
            for _ in 0..<2 {
                let there = here == "a" ? "b" : "a"
                let heartbeat = HeartbeatMonitor(paths: [
                    bed.node(here).imagesDirectory + "/default_multi-vm.serial",
                    bed.node(there).imagesDirectory + "/default_multi-vm.serial",
                ])
                defer { heartbeat.stop() }
                #expect(await heartbeat.waitForTicks(3, timeout: 60))
                let result = try await cluster.syncctl(["migrate", "multi-vm", "--wait"])
                #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
                #expect(await heartbeat.waitForTick(from: 1, timeout: 20))
                #expect(await heartbeat.waitForTicks(3))
                #expect(heartbeat.analysis().continuous, "\(heartbeat.report)")
                #expect(
                    heartbeat.kernelProblems.isEmpty, "the guest kernel reports damage: \(heartbeat.kernelProblems)")
                let disk = try await GuestDisk.contents(
                    of: bed.node(there).localStorage + "/images/default-multi-vm-dv.qcow2"
                ).prefix(GuestDisk.staticRegion)
                #expect(disk == first)
                here = there
            }
            // Back where it started: deleting it now stops it at once (the node that handed it over and got it back
            // treats it as its own again).
            _ = try await cluster.syncctl(["delete", "vm", "multi-vm"])
            let libvirt = try await Connection.open(bed.node(here).uri)
            _ = try await cluster.waitFor("domain gone after delete", timeout: 20) {
                try await libvirt.domainNames().contains("default_multi-vm") ? nil : true
            }
            await libvirt.close()
        }

        @Test(
            "with 2-minute leaves the controller and both agents renew their certificates (the agents through the controller, never holding the CA key) and keep serving and migrating across three renewals each, on past the first certificates' expiry"
        )
        func shortLivedCertificates() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed, leafValidity: 120)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("renew-vm", storageClass: "shared", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            var here = try await cluster.waitForRunning("renew-vm")
            let issued = cluster.pki.url.appendingPathComponent("issued").path
            let stems = ["controller-controller"] + bed.report.nodes.map { "node-\($0.name)" }
            var seen: [String: [String]] = [:]
            var firstExpiry = Date.distantFuture
            func sample() {
                for stem in stems {
                    guard let pem = try? String(contentsOfFile: "\(issued)/\(stem).pem", encoding: .utf8),
                        let key = try? String(contentsOfFile: "\(issued)/\(stem)-key.pem", encoding: .utf8),
                        let pair = try? CertifiedKey(certificatePEM: pem, privateKeyPEM: key)
                    else { continue }
                    let print = PEM.fingerprint(pair.certificate)
                    if seen[stem]?.last != print { seen[stem, default: []].append(print) }
                    if seen[stem]?.count == 1 { firstExpiry = min(firstExpiry, pair.notValidAfter) }
                }
            }
            sample()
            let heartbeat = HeartbeatMonitor(
                paths: bed.report.nodes.map { bed.node($0.name).imagesDirectory + "/default_renew-vm.serial" })
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3, timeout: 60))
            var migrations = 0
            var migratedAfterExpiry = false
            let deadline = Date().addingTimeInterval(540)
            while Date() < deadline {
                sample()
                if stems.allSatisfy({ (seen[$0]?.count ?? 0) >= 4 }), migratedAfterExpiry { break }
                let there = here == "a" ? "b" : "a"
                let result = try await cluster.syncctl(["migrate", "renew-vm", "--wait"])
                #expect(result.status == 0, "migration \(migrations + 1): \(result.stdout)\(result.stderr)")
                guard result.status == 0 else { break }
                migrations += 1
                if Date() > firstExpiry { migratedAfterExpiry = true }
                here = there
                #expect(try await cluster.waitForRunning("renew-vm") == here)
                for _ in 0..<5 {
                    sample()
                    try await Task.sleep(for: .seconds(2))
                }
            }
            for stem in stems {
                #expect((seen[stem]?.count ?? 0) >= 4, "three renewals of \(stem): \((seen[stem]?.count ?? 1) - 1)")
            }
            #expect(
                migratedAfterExpiry,
                "a migration after the first certificates expired (\(firstExpiry)); \(migrations) migrations")
            #expect(await heartbeat.waitForTicks(3))
            #expect(heartbeat.analysis().continuous, "\(heartbeat.report)")
            // Everything still serves: the nodes are Ready (their heartbeats arrive), and the controller presents a
            // certificate that is valid now (openssl s_client on its socket).
            let nodes = try await cluster.admin.list(Kinds.node)["items"]?.array ?? []
            #expect(
                nodes.filter { $0["status"]?["printableStatus"]?.string == "Ready" }.count == bed.report.nodes.count,
                "\(nodes)")
            let admin = "\(issued)/user-admin"
            let served = try await run(
                "/bin/bash",
                [
                    "-c",
                    "openssl s_client -unix \(cluster.socket) -cert \(admin).pem -key \(admin)-key.pem </dev/null 2>/dev/null | openssl x509 -noout -checkend 0",
                ])
            #expect(served.status == 0 && served.stdout.contains("will not expire"), "\(served.stdout)\(served.stderr)")
            let output = cluster.allOutput
            #expect(
                output.contains("renewed the node certificate") && output.contains("renewed the controller certificate")
                    && output.contains("signed a certificate"))
            _ = try await cluster.syncctl(["delete", "vm", "renew-vm"])
        }

        @Test(
            "aborts: deleting the migration at PreparingTarget and while Running (syncctl abort); the source keeps running, the target keeps nothing"
        )
        func aborts() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("abort-vm", storageClass: "local", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            let source = try await cluster.waitForRunning("abort-vm")
            let target = source == "a" ? "b" : "a"
            let heartbeat = HeartbeatMonitor(paths: [bed.node(source).imagesDirectory + "/default_abort-vm.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3, timeout: 60))

            // PreparingTarget: the target's libvirtd is frozen, so its agent stays in the middle of preparing.
            let libvirtd = bed.node(target).libvirtdPID
            kill(libvirtd, SIGSTOP)
            var resumed = false
            defer { if !resumed { kill(libvirtd, SIGCONT) } }
            var result = try await cluster.syncctl(["migrate", "abort-vm"])
            #expect(result.status == 0, "\(result.stderr)")
            let first = try await cluster.waitForMigration(of: "abort-vm", phase: "PreparingTarget")
            result = try await cluster.syncctl(["abort", "abort-vm"])
            #expect(
                result.status == 0 && result.stdout.contains("aborted (phase PreparingTarget)"),
                "\(result.stdout)\(result.stderr)")
            try await cluster.expectAborted(first, vm: "abort-vm")
            kill(libvirtd, SIGCONT)
            resumed = true
            try await cluster.expectNothingLeft(on: target, vm: "abort-vm", migration: first)
            #expect(await heartbeat.waitForTicks(5), "the guest keeps running on \(source)")

            // Running: a bandwidth of 1 MiB/s keeps the disk copy going long enough to abort it.
            try await cluster.setMigrations(["bandwidthPerMigration": "1Mi"])
            result = try await cluster.syncctl(["migrate", "abort-vm"])
            #expect(result.status == 0, "\(result.stderr)")
            let second = try await cluster.waitForMigration(of: "abort-vm", phase: "Running")
            _ = try await cluster.waitFor("progress published") {
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "abort-vm")
                return (vmi["status"]?["migrationState"]?["progress"]?["dataProcessedBytes"]?.int ?? 0) > 0 ? true : nil
            }
            result = try await cluster.syncctl(["abort", "abort-vm"])
            #expect(
                result.status == 0 && result.stdout.contains("aborted (phase Running)"),
                "\(result.stdout)\(result.stderr)")
            try await cluster.expectAborted(second, vm: "abort-vm")
            try await cluster.expectNothingLeft(on: target, vm: "abort-vm", migration: second)
            #expect(await heartbeat.waitForTicks(5), "the guest keeps running on \(source)")
            #expect(heartbeat.analysis().continuous, "\(heartbeat.report)")
            #expect(
                try await cluster.admin.get(Kinds.virtualMachineInstance, name: "abort-vm")["status"]?["nodeName"]?
                    .string == source)

            // Nothing to abort: one clear line.
            result = try await cluster.syncctl(["abort", "abort-vm"])
            #expect(
                result.status == 1 && result.stderr == "syncctl: vm abort-vm has no running or pending migration\n",
                "\(result.stderr)")
            _ = try await cluster.syncctl(["delete", "vm", "abort-vm"])
        }

        @Test(
            "kill -9 of the source agent while Running: its job and tunnels die with it, the restarted agent fails the migration, the guest stays, the target keeps nothing"
        )
        func sourceAgentDies() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("orphan-vm", storageClass: "local", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            let source = try await cluster.waitForRunning("orphan-vm")
            let target = source == "a" ? "b" : "a"
            let heartbeat = HeartbeatMonitor(paths: [bed.node(source).imagesDirectory + "/default_orphan-vm.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3, timeout: 60))
            try await cluster.setMigrations(["bandwidthPerMigration": "1Mi"])
            let result = try await cluster.syncctl(["migrate", "orphan-vm"])
            let vmim = try await cluster.createdMigration(result)
            _ = try await cluster.waitForMigration(of: "orphan-vm", phase: "Running")
            await cluster.killAgent(source)
            try cluster.startAgent(source)
            let failed = try await cluster.waitFor("migration failed after the agent's restart", timeout: 60) {
                let object = try await cluster.admin.get(Kinds.migration, name: vmim["metadata"]?["name"]?.string ?? "")
                return object["status"]?["phase"]?.string == "Failed" ? object : nil
            }
            #expect(
                failed["status"]?["conditions"]?.array?.contains { $0["reason"] == "SourceAgentRestarted" } == true,
                "\(failed)")
            try await cluster.expectNothingLeft(on: target, vm: "orphan-vm", migration: vmim)
            #expect(await heartbeat.waitForTicks(5), "the guest keeps running on \(source)")
            let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "orphan-vm")
            #expect(vmi["status"]?["nodeName"]?.string == source && vmi["status"]?["phase"] == "Running")
            #expect(vmi["status"]?["migrationState"]?["failed"] == true)
            _ = try await cluster.syncctl(["delete", "vm", "orphan-vm"])
        }

        @Test(
            "timeouts from the KubeVirt configuration: completion and progress (link cut) fail the migration with a reason naming them; the source keeps running"
        )
        func timeouts() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("slow-vm", storageClass: "local", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            let source = try await cluster.waitForRunning("slow-vm")
            let target = source == "a" ? "b" : "a"
            let heartbeat = HeartbeatMonitor(paths: [bed.node(source).imagesDirectory + "/default_slow-vm.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3, timeout: 60))

            // Completion: 2 s per GiB (the guest rounds up to 1 GiB) while 1 MiB/s cannot finish in time.
            try await cluster.setMigrations(["bandwidthPerMigration": "1Mi", "completionTimeoutPerGiB": 2])
            var result = try await cluster.syncctl(["migrate", "slow-vm", "--wait"])
            #expect(result.status == 1, "\(result.stdout)")
            #expect(result.stderr.contains("completion timeout of 2 s exceeded"), "\(result.stderr)")
            var vmim = try await cluster.createdMigration(result)
            #expect(vmim["status"]?["phase"] == "Failed")
            try await cluster.expectNothingLeft(on: target, vm: "slow-vm", migration: vmim)
            #expect(await heartbeat.waitForTicks(5))

            // Progress: the link between the nodes is cut while the disk is copied; 3 s without progress fail it.
            try await cluster.setMigrations([
                "bandwidthPerMigration": "1Mi", "completionTimeoutPerGiB": 150, "progressTimeout": 3,
            ])
            result = try await cluster.syncctl(["migrate", "slow-vm"])
            #expect(result.status == 0, "\(result.stderr)")
            let cut = try await cluster.createdMigration(result)
            _ = try await cluster.waitForMigration(of: "slow-vm", phase: "Running")
            try await Task.sleep(for: .seconds(1))
            try await bed.setLink(of: target, up: false)
            let failed = try await cluster.waitFor("progress timeout", timeout: 60) {
                let object = try await cluster.admin.get(Kinds.migration, name: cut["metadata"]?["name"]?.string ?? "")
                return object["status"]?["phase"]?.string == "Failed" ? object : nil
            }
            try await bed.setLink(of: target, up: true)
            let reason = failed["status"]?["migrationState"]?["failureReason"]?.string ?? ""
            #expect(reason.contains("no progress within the progress timeout of 3 s"), "\(reason)")
            vmim = failed
            try await cluster.expectNothingLeft(on: target, vm: "slow-vm", migration: vmim)
            #expect(await heartbeat.waitForTicks(5), "the source keeps running")
            #expect(heartbeat.analysis().continuous, "\(heartbeat.report)")
            _ = try await cluster.syncctl(["delete", "vm", "slow-vm"])
        }

        @Test(
            "a 5 s cut of the link between the nodes while the copy runs (progress sampled during the cut): the migration resumes and completes, no tick lost, no restart"
        )
        func briefOutage() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("outage-vm", storageClass: "local", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            let source = try await cluster.waitForRunning("outage-vm")
            let target = source == "a" ? "b" : "a"
            let heartbeat = HeartbeatMonitor(paths: [
                bed.node(source).imagesDirectory + "/default_outage-vm.serial",
                bed.node(target).imagesDirectory + "/default_outage-vm.serial",
            ])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3, timeout: 60))
            // 16 MiB/s: the 64 MiB disk takes about 4 s, so the cut falls inside the copy.
            try await cluster.setMigrations(["bandwidthPerMigration": "16Mi"])
            async let migrated = cluster.syncctl(["migrate", "outage-vm", "--wait"])
            _ = try await cluster.waitForMigration(of: "outage-vm", phase: "Running")
            // The cut must fall inside the copy: libvirt's own account of the job (virsh domjobinfo on the source),
            // taken once the disk mirror has started and again at both ends of the cut, shows the job running with
            // data left, and less moved during the cut than the limit would move in that time.
            let sourceURI = bed.node(source).uri
            _ = try await cluster.waitFor("the disk mirror under way", timeout: 30) { () async throws -> JobSample? in
                let sample = try await JobSample.read(sourceURI, "default_outage-vm")
                return sample.running && sample.remaining > 0 && sample.processed > 0 ? sample : nil
            }
            try await bed.setLink(of: target, up: false)
            let atCut = try await JobSample.read(sourceURI, "default_outage-vm")
            try await Task.sleep(for: .seconds(5))
            let beforeRestore = try await JobSample.read(sourceURI, "default_outage-vm")
            try await bed.setLink(of: target, up: true)
            for sample in [atCut, beforeRestore] {
                #expect(sample.running && sample.remaining > 0, "the copy was under way during the cut: \(sample)")
            }
            #expect(
                beforeRestore.elapsed > atCut.elapsed + 4000,
                "both samples from the same job, 5 s apart: \(atCut) then \(beforeRestore)")
            let moved = beforeRestore.processed - atCut.processed
            print("link cut: \(atCut) then \(beforeRestore)")
            #expect(
                moved < 16 << 20,
                "the cut stopped the streams (\(moved) bytes moved in 5 s at 16 MiB/s): \(atCut) then \(beforeRestore)")
            let result = try await migrated
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            #expect(
                try await cluster.admin.get(Kinds.virtualMachineInstance, name: "outage-vm")["status"]?["nodeName"]?
                    .string == target)
            let arrived = await heartbeat.waitForTick(from: 1, timeout: 20)
            let ticking = await heartbeat.waitForTicks(3)
            var report = ""
            if !(arrived && ticking) {
                // Is the guest ticking on its disk (it writes each tick there after printing it)?
                let disk = bed.node(target).localStorage + "/images/default-outage-vm-dv.qcow2"
                let before = (try? await GuestDisk.contents(of: disk)).flatMap(GuestDisk.lastTick)
                try await Task.sleep(for: .seconds(2))
                let after = (try? await GuestDisk.contents(of: disk)).flatMap(GuestDisk.lastTick)
                report =
                    "\(await cluster.guestReport("default_outage-vm")); tick on the target's disk \(before.map(String.init) ?? "?") then \(after.map(String.init) ?? "?") 2 s later; consoles \(heartbeat.connections)"
            }
            #expect(
                arrived && ticking,
                "the guest ticks on \(target): \(heartbeat.analysis()); \(report); console \(heartbeat.messages.suffix(3)); other lines \(heartbeat.otherLines.suffix(12))"
            )
            #expect(
                heartbeat.kernelProblems.isEmpty,
                "the guest kernel reports damage after the migration: \(heartbeat.kernelProblems)")
            #expect(heartbeat.analysis().continuous, "\(heartbeat.report)")
            _ = try await cluster.syncctl(["delete", "vm", "outage-vm"])
        }

        @Test(
            "the scheduler does not send a host-model guest to a node that cannot take its CPU, and says why; one migration per VMI; an unschedulable one fails after its timeout"
        )
        func cpuModelAndSingleMigration() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("cpu-vm", storageClass: "shared", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            let source = try await cluster.waitForRunning("cpu-vm")
            let target = source == "a" ? "b" : "a"
            // The target stops offering the source's host model for migration (as a node with another CPU would).
            let labels = try await cluster.admin.get(Kinds.node, name: source)["metadata"]?["labels"]?.stringMap ?? [:]
            let hostModel =
                try #require(labels.keys.first { $0.hasPrefix("host-model-cpu.node.kubevirt.io/") }).split(
                    separator: "/"
                ).last.map(String.init) ?? ""
            _ = try await cluster.admin.patch(
                Kinds.node, name: target,
                [
                    "metadata": [
                        "labels": [.init(stringLiteral: "cpu-model-migration.node.kubevirt.io/\(hostModel)"): .null]
                    ]
                ])
            try await cluster.setMigrations(["unschedulableTimeoutSeconds": 4])

            var result = try await cluster.syncctl(["migrate", "cpu-vm"])
            #expect(result.status == 0, "\(result.stderr)")
            let first = try await cluster.createdMigration(result)
            let condition = try await cluster.waitFor("the scheduler says why") {
                let object = try await cluster.admin.get(
                    Kinds.migration, name: first["metadata"]?["name"]?.string ?? "")
                return object["status"]?["conditions"]?.array?.first {
                    $0["type"] == "TargetScheduled" && $0["status"] == "False"
                }
            }
            let message = condition["message"]?.string ?? ""
            #expect(
                message.contains("\(target): the target cannot take a host-model \"\(hostModel)\" guest"), "\(message)")

            // A second migration of the same VMI while the first waits is refused at create, in one line.
            result = try await cluster.syncctl(["migrate", "cpu-vm"])
            #expect(result.status == 1 && result.stdout.isEmpty, "\(result.stdout)\(result.stderr)")
            #expect(
                result.stderr.contains("already has a running or pending migration")
                    && result.stderr.contains("MigrationInProgress"), "\(result.stderr)")
            #expect(try await cluster.admin.list(Kinds.migration)["items"]?.array?.count == 1)

            // The first fails once the unschedulable timeout has passed; the guest never left.
            let failed = try await cluster.waitFor("unschedulable migration failed", timeout: 30) {
                let object = try await cluster.admin.get(
                    Kinds.migration, name: first["metadata"]?["name"]?.string ?? "")
                return object["status"]?["phase"]?.string == "Failed" ? object : nil
            }
            #expect(
                failed["status"]?["migrationState"]?["failureReason"]?.string?.contains("cannot take a host-model")
                    == true)
            let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "cpu-vm")
            #expect(vmi["status"]?["nodeName"]?.string == source && vmi["status"]?["phase"] == "Running")
            _ = try await cluster.syncctl(["delete", "vm", "cpu-vm"])
        }

        @Test(
            "drain: tainting a node kubevirt.io/drain=draining:NoSchedule migrates its live-migratable VMIs one at a time (the node limit), reports the one that cannot move, and says when it is done"
        )
        func drain() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.setMigrations(["parallelOutboundMigrationsPerNode": 1])
            // Everything starts on a: b is cordoned meanwhile.
            _ = try await cluster.admin.patch(Kinds.node, name: "b", ["spec": ["unschedulable": true]])
            try await cluster.apply(
                MigrationManifests.bootableVM("drain-1", storageClass: "local", image: bed.report.guest.bootDisk),
                as: "d1.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("drain-2", storageClass: "shared", image: bed.report.guest.bootDisk),
                as: "d2.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM(
                    "pinned", storageClass: "local", image: bed.report.guest.bootDisk,
                    extraSpec: "nodeSelector:\n  kubernetes.io/hostname: a"), as: "pinned.yaml")
            for vm in ["drain-1", "drain-2", "pinned"] { #expect(try await cluster.waitForRunning(vm) == "a") }
            _ = try await cluster.admin.patch(Kinds.node, name: "b", ["spec": ["unschedulable": false]])
            let monitors = ["drain-1", "drain-2"].map { vm in
                HeartbeatMonitor(paths: [
                    bed.node("a").imagesDirectory + "/default_\(vm).serial",
                    bed.node("b").imagesDirectory + "/default_\(vm).serial",
                ])
            }
            defer { monitors.forEach { $0.stop() } }
            for monitor in monitors { #expect(await monitor.waitForTicks(3, timeout: 60)) }
            _ = try await cluster.waitFor("LiveMigratable known") {
                let items = try await cluster.admin.list(Kinds.virtualMachineInstance)["items"]?.array ?? []
                return items.allSatisfy {
                    $0["status"]?["conditions"]?.array?.contains { $0["type"] == "LiveMigratable" } == true
                } ? true : nil
            }

            _ = try await cluster.admin.patch(
                Kinds.node, name: "a",
                ["spec": ["taints": [["key": "kubevirt.io/drain", "value": "draining", "effect": "NoSchedule"]]]])
            var shown = Set<String>()
            var mostActive = 0
            let drained = try await cluster.waitFor("node a drained", timeout: 120) { () async throws -> JSONValue? in
                let table = try await cluster.syncctl(["get", "vmi"])
                for status in ["Pending migration", "Migrating"] where table.stdout.contains(status) {
                    shown.insert(status)
                }
                let migrations = try await cluster.admin.list(Kinds.migration)["items"]?.array ?? []
                mostActive = max(
                    mostActive,
                    migrations.filter { Migration.activePhases.contains($0["status"]?["phase"]?.string ?? "") }.count)
                let node = try await cluster.admin.get(Kinds.node, name: "a")
                let condition = node["status"]?["conditions"]?.array?.first { $0["type"] == "Drained" }
                return condition?["status"] == "True" ? condition : nil
            }
            #expect(drained["reason"] == "DrainCompleteWithRemainingVMIs", "\(drained)")
            let message = drained["message"]?.string ?? ""
            #expect(
                message.contains("default/pinned (nodeSelector kubernetes.io/hostname=a binds the VMI to one node)"),
                "\(message)")
            #expect(shown == ["Pending migration", "Migrating"], "syncctl get vmi showed \(shown)")
            #expect(mostActive == 1, "at most one migration left a at once")

            let migrations = try await cluster.admin.list(Kinds.migration)["items"]?.array ?? []
            #expect(
                migrations.count == 2,
                "one evacuation per migratable VMI: \(migrations.map { $0["metadata"]?["name"]?.string ?? "" })")
            var windows: [(String, String)] = []
            for migration in migrations {
                let name = migration["metadata"]?["name"]?.string ?? ""
                #expect(
                    name.hasPrefix("kubevirt-evacuation-") && name.count == "kubevirt-evacuation-".count + 5, "\(name)")
                #expect(migration["status"]?["phase"] == "Succeeded", "\(migration)")
                let history = migration["status"]?["phaseTransitionTimestamps"]?.array ?? []
                let start = history.first { $0["phase"] == "Scheduling" }?["phaseTransitionTimestamp"]?.string ?? ""
                let end = history.last?["phaseTransitionTimestamp"]?.string ?? ""
                windows.append((start, end))
            }
            windows.sort { $0.0 < $1.0 }
            if windows.count == 2 {
                #expect(windows[0].1 <= windows[1].0, "the second started after the first finished: \(windows)")
            }
            for vm in ["drain-1", "drain-2"] {
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: vm)
                #expect(
                    vmi["status"]?["nodeName"] == "b" && vmi["status"]?["phase"] == "Running"
                        && vmi["status"]?["evacuationNodeName"] == "a")
            }
            let pinned = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "pinned")
            #expect(
                pinned["status"]?["nodeName"] == "a" && pinned["status"]?["phase"] == "Running", "reported, not killed")
            for monitor in monitors {
                #expect(
                    await monitor.waitForTick(from: 1, timeout: 10),
                    "\(monitor.analysis()); other lines \(monitor.otherLines.suffix(12))")
                #expect(monitor.analysis().continuous, "\(monitor.analysis())")
                #expect(monitor.kernelProblems.isEmpty, "the guest kernel reports damage: \(monitor.kernelProblems)")
            }
        }
    }
}

/// libvirt's account of a domain's job, read with `virsh domjobinfo` (an independent reader of the job).
struct JobSample: CustomStringConvertible {
    var running: Bool
    var elapsed: Int64, processed: Int64, remaining: Int64
    var text: String

    /// Reads it (3 s at most: a libvirt that does not answer is a failure, not a hang).
    static func read(_ uri: String, _ domain: String) async throws -> JobSample {
        let result = try await TestSupport.run("/usr/bin/virsh", ["-c", uri, "domjobinfo", domain], timeout: 3)
        func number(_ label: String) -> Int64 {
            guard let line = result.stdout.split(separator: "\n").first(where: { $0.hasPrefix(label) }) else {
                return 0
            }
            let fields = line.dropFirst(label.count).split(separator: " ")
            guard let value = fields.first.flatMap({ Double($0) }) else { return 0 }
            let unit = fields.dropFirst().first.map(String.init) ?? ""
            let scales: [String: Double] = ["KiB": 1024, "MiB": 1_048_576, "GiB": 1_073_741_824, "B": 1, "ms": 1]
            let scale = scales[unit] ?? 1
            return Int64(value * scale)
        }
        let running = result.stdout.contains("Job type:") && !result.stdout.contains("Job type:         None")
        return JobSample(
            running: running, elapsed: number("Time elapsed:"),
            processed: number("Data processed:") + number("File processed:"),
            remaining: max(number("Data remaining:"), number("File remaining:")), text: result.stdout)
    }

    var description: String {
        "job \(running ? "running" : "none"), elapsed \(elapsed) ms, processed \(processed), remaining \(remaining)"
    }
}

extension BedCluster {
    /// The migration failed as aborted (or is gone after it), and the VMI's migration state says the abort succeeded.
    func expectAborted(_ vmim: JSONValue, vm: String) async throws {
        let uid = vmim["metadata"]?["uid"]
        _ = try await waitFor("migration \(vmim["metadata"]?["name"]?.string ?? "") aborted and gone", timeout: 60) {
            () async throws -> Bool? in
            do {
                let object = try await admin.get(Kinds.migration, name: vmim["metadata"]?["name"]?.string ?? "")
                return object["metadata"]?["uid"] != uid ? true : nil
            } catch {
                return (error as? APIError)?.code == 404 ? true : nil
            }
        }
        let state = try await admin.get(Kinds.virtualMachineInstance, name: vm)["status"]?["migrationState"]
        #expect(
            state?["migrationUid"] == uid && state?["failed"] == true && state?["abortStatus"] == "Succeeded",
            "\(state ?? .null)")
    }

    /// The target has no domain, no incoming disk and no migration sockets of `migration` left.
    func expectNothingLeft(on target: String, vm: String, migration: JSONValue) async throws {
        let node = bed.node(target)
        let uid = migration["metadata"]?["uid"]?.string ?? "?"
        let libvirt = try await Connection.open(node.uri)
        defer { Task { await libvirt.close() } }
        _ = try await waitFor("nothing of \(vm) left on \(target)", timeout: 30) {
            let names = try await libvirt.domainNames()
            let disk = node.localStorage + "/images/default-\(vm)-dv.qcow2"
            let sockets = node.localStorage + "/migrations/\(uid)"
            return !names.contains("default_\(vm)") && !FileManager.default.fileExists(atPath: disk)
                && !FileManager.default.fileExists(atPath: sockets) ? true : nil
        }
    }
}
