import ArgumentParser
import ClusterAPI
import ClusterBed
import ClusterClient
import Foundation
import TestBed
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

extension TestBedCommand {
    /// The local demo, as far as the landed work reaches: a cluster of two libvirt nodes (a sync-controller, a node
    /// agent on each), the seed's VM applied with syncctl, then live-migrated with `syncctl migrate` a → b → a, its
    /// disk block-copied and its streams tunnelled between the agents over mutual TLS, the heartbeat shown throughout.
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "A two-node cluster: the seed's VM live-migrated a → b → a with syncctl; then two clusters: seed 001 moves it from alpha to beta."
        )
        @OptionGroup var cache: CacheOption

        func validate() throws {
            guard getuid() == 0 else { throw ValidationError("the demo needs root (network and mount namespaces)") }
        }

        func run() async throws {
            setenv("VMSYNC_CACHE", cache.cache, 1)
            print(
                "demo: starting nodes a and b (libvirtd each in its own network and mount namespace, a and b on two networks joined by a router; the first run builds the tiny guest)"
            )
            let bed = try await TestBed.start(nodes: 2, segments: 2)
            do {
                try await demo(bed)
            } catch {
                print("demo: failed: \(error)")
                _ = await bed.stop()
                print("demo: bed torn down")
                throw ExitCode.failure
            }
            _ = await bed.stop()
            print("demo: bed torn down")
        }

        private func demo(_ bed: TestBed) async throws {
            for node in bed.report.nodes { print("  node \(node.name): \(node.address)  \(node.uri)") }
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            print(
                "demo: cluster up — sync-controller on \(cluster.socket), node agents on a and b (tunnels on port 8444)"
            )
            try await step(cluster, ["get", "nodes"])

            let manifest = MigrationManifests.seedVM(image: bed.report.guest.bootDisk)
            let file = bed.report.directory + "/demo.yaml"
            try manifest.write(toFile: file, atomically: true, encoding: .utf8)
            print(
                "demo: syncctl apply -f demo.yaml (a StorageClass, a DataVolume from the guest's disk image, the seed's VM)"
            )
            try await step(cluster, ["apply", "-f", file])
            let vm = "example-decentralized-lm-vm"
            var node = try await cluster.waitForRunning(vm)
            let domain = "default_\(vm)"
            let boot = HeartbeatMonitor(paths: [bed.node(node).imagesDirectory + "/\(domain).serial"])
            guard await boot.waitForTicks(5, timeout: 60) else { throw TestBedError("the guest printed no heartbeat") }
            boot.stop()
            try await step(cluster, ["get", "vmi"])

            var lost: [Int] = []
            var restarts: [HeartbeatMonitor.Restart] = []
            for _ in 0..<2 {
                let target = node == "a" ? "b" : "a"
                let heartbeat = HeartbeatMonitor(paths: [
                    bed.node(node).imagesDirectory + "/\(domain).serial",
                    bed.node(target).imagesDirectory + "/\(domain).serial",
                ])
                defer { heartbeat.stop() }
                _ = await heartbeat.waitForTicks(3)
                print(
                    "demo: syncctl migrate \(vm) --node \(target) --wait   (the local disk is block-copied while the guest runs)"
                )
                try await step(cluster, ["migrate", vm, "--node", target, "--wait"])
                _ = await heartbeat.waitForTick(from: 1)
                _ = await heartbeat.waitForTicks(3)
                let analysis = heartbeat.analysis()
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: vm)
                // libvirt's downtime is in the migration's record (written just after the handover).
                let uid = vmi["status"]?["migrationState"]?["migrationUid"]?.string
                let migration = try? await cluster.admin.list(Kinds.migration)["items"]?.array?.first {
                    $0["metadata"]?["uid"]?.string == uid
                }
                let downtime = migration?["status"]?["migrationState"]?["downtimeMilliseconds"]?.int
                print(
                    "  on \(vmi["status"]?["nodeName"]?.string ?? "?"); libvirt downtime \(downtime.map(String.init) ?? "?") ms; heartbeat: \(analysis)"
                )
                if let paused = (migration?["status"]?["conditions"]?.array ?? []).first(where: {
                    $0["type"] == "MemoryCopyPaused"
                }) {
                    print("  \(paused["message"]?.string ?? "the memory was copied with the guest paused")")
                }
                lost += analysis.lost
                restarts += analysis.restarts
                node = target
            }
            try await step(cluster, ["get", "vmim"])
            print("demo: syncctl delete -f demo.yaml")
            try await step(cluster, ["delete", "-f", file])
            _ = try await cluster.waitFor("the VM gone", timeout: 60) { () async throws -> Bool? in
                do {
                    _ = try await cluster.admin.get(Kinds.virtualMachineInstance, name: vm)
                    return nil
                } catch {
                    return (error as? APIError)?.code == 404 ? true : nil
                }
            }
            // The console shows what the guest printed; a line printed at the very switchover can miss the console
            // reader on a loaded machine (the tests assert on the guest's disk and ticks as well).
            guard restarts.isEmpty else { throw TestBedError("the guest restarted during a migration: \(restarts)") }
            print(
                "demo: part 1 done — the seed's VM went a → b → a live through the cluster without a restart, "
                    + (lost.isEmpty ? "no heartbeat tick lost" : "console missed tick(s) \(lost)"))
            await cluster.shutdown()
            try await CrossCluster.clearNodes(bed)
            try await acrossClusters(bed)
        }

        /// Part 2: two clusters — alpha on node a, beta on node b, each with its own CA and sync endpoint — made peers
        /// through their APIs, then seed 001 as written: the target DataVolume and VM on beta, both VMIMs, the guest
        /// moved from alpha to beta with its disk while both sides' phases show.
        private func acrossClusters(_ bed: TestBed) async throws {
            let alpha = try await BedCluster.start(bed, on: ["a"], name: "alpha", syncPort: 9185)
            defer { alpha.stopAll() }
            let beta = try await BedCluster.start(bed, on: ["b"], name: "beta", syncPort: 9285, gatewayPort: 9287)
            defer { beta.stopAll() }
            print(
                "demo: part 2 — two clusters: alpha (node a, sync endpoint \(alpha.syncAddress ?? "")) and beta (node b, sync endpoint \(beta.syncAddress ?? "")), each with its own CA"
            )
            print("demo: syncctl --context alpha ca export | syncctl --context beta ca import -f -   (and back)")
            try await CrossCluster.pair(alpha, beta)
            print(
                "  | each cluster's kubevirt-ca now holds the other's CA (trusted for sync and its paired migrations only)"
            )
            print("  | featureGates: [DecentralizedLiveMigration] on both")
            try await CrossCluster.useGateway(beta)
            print(
                "  | beta takes other clusters' migrations through one port: crossClusterGateway \(beta.gatewayAddress ?? "") (sync-controller --gateway-listen)"
            )
            let vm = CrossCluster.vmName
            let domain = "default_\(vm)"
            let source = bed.report.directory + "/alpha-seed.yaml"
            try MigrationManifests.seedVM(image: bed.report.guest.bootDisk).write(
                toFile: source, atomically: true, encoding: .utf8)
            print("demo: [alpha] syncctl apply -f alpha-seed.yaml   (the seed's source VM)")
            try await step(alpha, ["apply", "-f", source])
            _ = try await alpha.waitForRunning(vm)
            let target = bed.report.directory + "/beta-target.yaml"
            try CrossCluster.targetManifests().write(toFile: target, atomically: true, encoding: .utf8)
            print(
                "demo: [beta] syncctl apply -f beta-target.yaml   (StorageClass other, the seed's blank target DataVolume on it, the target VM: WaitAsReceiver)"
            )
            try await step(beta, ["apply", "-f", target])
            _ = try await beta.waitFor("the receiving VMI") {
                let vmi = try await beta.admin.get(Kinds.virtualMachineInstance, name: vm)
                return vmi["status"]?["phase"] == "WaitingForSync" ? true : nil
            }
            try await step(beta, ["get", "vm"])
            let heartbeat = HeartbeatMonitor(paths: [
                bed.node("a").imagesDirectory + "/\(domain).serial",
                bed.node("b").imagesDirectory + "/\(domain).serial",
            ])
            defer { heartbeat.stop() }
            guard await heartbeat.waitForTicks(5, timeout: 60) else { throw TestBedError("no heartbeat on a") }
            let (targetMigration, sourceMigration) = CrossCluster.migrations(
                id: "demo-\(UUID().uuidString.prefix(8).lowercased())", connectURL: beta.syncAddress ?? "")
            for (cluster, name, manifest) in [
                (beta, "target-migration.yaml", targetMigration), (alpha, "source-migration.yaml", sourceMigration),
            ] {
                let path = bed.report.directory + "/" + name
                try manifest.write(toFile: path, atomically: true, encoding: .utf8)
                print("demo: [\(cluster.name)] syncctl apply -f \(name)")
                try await step(cluster, ["apply", "-f", path])
            }
            // Both sides' phases and the job's progress as they change.
            var seen: [String: String] = [:]
            let deadline = Date().addingTimeInterval(180)
            while Date() < deadline {
                var ended = 0
                for (cluster, name) in [(alpha, "example-source-migration"), (beta, "example-target-migration")] {
                    let vmim = try await cluster.admin.get(Kinds.migration, name: name)
                    let phase = vmim["status"]?["phase"]?.string ?? "new"
                    let progress = vmim["status"]?["migrationState"]?["progress"]
                    var line = phase
                    if let processed = progress?["dataProcessedBytes"]?.int,
                        let total = progress?["dataTotalBytes"]?.int
                    {
                        line += "  \(progress?["phase"]?.string ?? "") \(processed >> 20)/\(total >> 20) MiB"
                    }
                    if seen[cluster.name] != line {
                        seen[cluster.name] = line
                        print("  [\(cluster.name)] \(name): \(line)")
                    }
                    if phase == "Failed" {
                        throw TestBedError(
                            "\(cluster.name)'s migration failed: \(vmim["status"]?["migrationState"]?["failureReason"]?.string ?? "")"
                        )
                    }
                    if phase == "Succeeded" { ended += 1 }
                }
                if ended == 2 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            guard seen.values.allSatisfy({ $0.hasPrefix("Succeeded") }) else {
                throw TestBedError("the migration did not end within 180 s")
            }
            _ = await heartbeat.waitForTick(from: 1)
            _ = await heartbeat.waitForTicks(3)
            let analysis = heartbeat.analysis()
            _ = try await beta.waitFor("the target VM running under its restored run strategy") {
                let object = try await beta.admin.get(Kinds.virtualMachine, name: vm)
                return object["spec"]?["runStrategy"] == "Always" && object["status"]?["printableStatus"] == "Running"
                    ? true : nil
            }
            _ = try await alpha.waitFor("the source VM halted") {
                let object = try await alpha.admin.get(Kinds.virtualMachine, name: vm)
                return object["spec"]?["runStrategy"] == "Halted" ? true : nil
            }
            for (cluster, name) in [(alpha, "example-source-migration"), (beta, "example-target-migration")] {
                let vmim = try await cluster.admin.get(Kinds.migration, name: name)
                let phases = (vmim["status"]?["phaseTransitionTimestamps"]?.array ?? []).compactMap {
                    $0["phase"]?.string
                }
                print("  [\(cluster.name)] \(name) phases: \(phases.joined(separator: " → "))")
            }
            print("demo: [alpha] syncctl get vm,vmi")
            try await step(alpha, ["get", "vm"])
            try await step(alpha, ["get", "vmi"])
            print("demo: [beta] syncctl get vm,vmi")
            try await step(beta, ["get", "vm"])
            try await step(beta, ["get", "vmi"])
            print("  heartbeat: \(analysis)")
            guard analysis.restarts.isEmpty else { throw TestBedError("the guest restarted: \(analysis.restarts)") }
            print(
                "demo: done — the seed's VM moved live from cluster alpha to cluster beta with its disk, "
                    + (analysis.lost.isEmpty ? "no heartbeat tick lost" : "console missed tick(s) \(analysis.lost)")
                    + "; the source VM is Halted, the target VM runs under its restored run strategy")
        }

        /// Runs syncctl, printing what it printed; a failure ends the demo.
        private func step(_ cluster: BedCluster, _ arguments: [String]) async throws {
            let result = try await cluster.syncctl(arguments)
            let output = (result.stdout + result.stderr).split(separator: "\n").map { "  | " + $0 }.joined(
                separator: "\n")
            if !output.isEmpty { print(output) }
            guard result.status == 0 else { throw TestBedError("syncctl \(arguments.joined(separator: " ")) failed") }
        }
    }
}
