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
                "A two-node cluster; the seed's VM applied, then live-migrated a → b → a with syncctl, heartbeat shown."
        )
        @OptionGroup var cache: CacheOption

        func validate() throws {
            guard getuid() == 0 else { throw ValidationError("the demo needs root (network and mount namespaces)") }
        }

        func run() async throws {
            setenv("VMSYNC_CACHE", cache.cache, 1)
            print(
                "demo: starting nodes a and b (libvirtd each in its own network and mount namespace; the first run builds the tiny guest)"
            )
            let bed = try await TestBed.start(nodes: 2)
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
                "demo: done — the seed's VM went a → b → a live through the cluster without a restart, "
                    + (lost.isEmpty ? "no heartbeat tick lost" : "console missed tick(s) \(lost)"))
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
