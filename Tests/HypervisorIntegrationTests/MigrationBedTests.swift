import ClusterAPI
import Foundation
import Hypervisor
import TLSTransport
import TestBed
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension RealLibvirt {
    /// Live migration inside one cluster: VMIM phases, the agents' mTLS tunnels, aborts, timeouts, drain.
    @Suite("Live migration in a cluster: VMIMs, tunnels between agents", .serialized, .enabled(if: canRunTestBed), .testBed(nodes: 2))
    struct MigrationBedTests {
        @Test("syncctl migrate moves a running guest with a local disk (block-copied) and one on shared storage (not copied): no tick lost, disk identical, phases and migrationState recorded")
        func migrateLocalAndShared() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            let shared = bed.report.sharedDirectory + "/images-\(UUID().uuidString.prefix(6))"
            try await cluster.apply(MigrationManifests.storageClasses(sharedDirectory: shared), as: "classes.yaml")
            for (vm, storageClass) in [("local-vm", "local"), ("shared-vm", "shared")] {
                try await cluster.apply(MigrationManifests.bootableVM(vm, storageClass: storageClass, image: bed.report.guest.bootDisk), as: "\(vm).yaml")
            }
            for (vm, storageClass) in [("local-vm", "local"), ("shared-vm", "shared")] {
                let source = try await cluster.waitForRunning(vm)
                let target = source == "a" ? "b" : "a"
                let domainName = "default_\(vm)"
                let heartbeat = HeartbeatMonitor(paths: [bed.node(source).imagesDirectory + "/\(domainName).serial", bed.node(target).imagesDirectory + "/\(domainName).serial"])
                defer { heartbeat.stop() }
                #expect(await heartbeat.waitForTicks(5, timeout: 60), "\(vm) ticks on \(source)")
                let disk = storageClass == "local" ? "/var/lib/vmsync/images/default-\(vm)-dv.qcow2" : "\(shared)/default-\(vm)-dv.qcow2"
                let sourceDisk = storageClass == "local" ? bed.node(source).localStorage + "/images/default-\(vm)-dv.qcow2" : disk
                let targetDisk = storageClass == "local" ? bed.node(target).localStorage + "/images/default-\(vm)-dv.qcow2" : disk
                let before = try await GuestDisk.contents(of: sourceDisk).prefix(GuestDisk.staticRegion)

                let result = try await cluster.syncctl(["migrate", vm, "--wait"])
                #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
                #expect(result.stdout.contains("now runs on \(target)"), "\(result.stdout)")
                let name = try #require(result.stdout.split(separator: "\n").first?.split(separator: "/").last.map(String.init)?.replacingOccurrences(of: " created", with: ""))
                #expect(name.count == vm.count + 6 && name.hasPrefix(vm + "-"), "named <vm>-xxxxx: \(name)")

                #expect(await heartbeat.waitForTick(from: 1, timeout: 20), "ticks come from \(target)'s console")
                #expect(await heartbeat.waitForTicks(5))
                let analysis = heartbeat.analysis()
                #expect(analysis.lost.isEmpty, "\(vm): \(analysis)")
                print("\(vm) (\(storageClass)): \(analysis)")

                let vmim = try await cluster.admin.get(Kinds.migration, name: name)
                let phases = (vmim["status"]?["phaseTransitionTimestamps"]?.array ?? []).compactMap { $0["phase"]?.string }
                #expect(phases == ["Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", "Succeeded"], "\(phases)")
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: vm)
                let state = try #require(vmi["status"]?["migrationState"])
                #expect(vmi["status"]?["nodeName"]?.string == target && vmi["status"]?["phase"] == "Running")
                #expect(state["sourceNode"]?.string == source && state["targetNode"]?.string == target, "\(state)")
                #expect(state["completed"] == true && state["failed"] == false, "\(state)")
                #expect(state["migrationUID"] == vmim["metadata"]?["uid"] && state["migrationUid"] == vmim["metadata"]?["uid"])
                #expect(state["startTimestamp"]?.string != nil && state["endTimestamp"]?.string != nil && state["mode"] == "PreCopy")
                #expect(state["progress"]?["dataTotalBytes"]?.int ?? 0 > 0, "progress was published: \(state)")

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
    }
}

/// Manifests the migration tests apply.
enum MigrationManifests {
    static func storageClasses(sharedDirectory: String) -> String {
        """
        apiVersion: storage.k8s.io/v1
        kind: StorageClass
        metadata:
          name: local
        directory: /var/lib/vmsync/images
        shared: false
        ---
        apiVersion: storage.k8s.io/v1
        kind: StorageClass
        metadata:
          name: shared
        directory: \(sharedDirectory)
        shared: true
        """
    }

    /// A VM booting the tiny guest's disk image from a DataVolume on `storageClass`.
    static func bootableVM(_ name: String, storageClass: String, image: String, extraSpec: String = "") -> String {
        """
        apiVersion: cdi.kubevirt.io/v1beta1
        kind: DataVolume
        metadata:
          name: \(name)-dv
        spec:
          source:
            http:
              url: file://\(image)
          storage:
            storageClassName: \(storageClass)
            resources:
              requests:
                storage: 64Mi
        ---
        apiVersion: kubevirt.io/v1
        kind: VirtualMachine
        metadata:
          name: \(name)
        spec:
          runStrategy: Always
          template:
            spec:
              domain:
                devices:
                  disks:
                  - name: disk0
                    disk:
                      bus: virtio
                resources:
                  requests:
                    memory: 128Mi
        \(extraSpec.split(separator: "\n", omittingEmptySubsequences: false).map { "      " + $0 }.joined(separator: "\n"))
              volumes:
              - name: disk0
                dataVolume:
                  name: \(name)-dv
        """
    }
}

extension BedCluster {
    /// `syncctl apply` of `manifest` (written into the bed directory as `file`).
    func apply(_ manifest: String, as file: String) async throws {
        let path = bed.report.directory + "/" + file
        try manifest.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await syncctl(["apply", "-f", path])
        guard result.status == 0 else { throw TestBedError("syncctl apply \(file): \(result.stderr)") }
    }

    /// Waits until the VM's VMI runs; returns its node.
    func waitForRunning(_ vm: String, timeout: TimeInterval = 90) async throws -> String {
        try await waitFor("\(vm) Running", timeout: timeout) {
            let vmi = try await admin.get(Kinds.virtualMachineInstance, name: vm)
            return vmi["status"]?["phase"]?.string == "Running" ? vmi["status"]?["nodeName"]?.string : nil
        }
    }
}
