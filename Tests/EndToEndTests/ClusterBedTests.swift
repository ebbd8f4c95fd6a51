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
    /// One cluster on the bed: a sync-controller and a node agent on each of two libvirt nodes, driven with syncctl.
    @Suite(
        "One cluster: controller, two node agents, real guests", .serialized, .enabled(if: canRunTestBed),
        .testBed(nodes: 2))
    struct ClusterBedTests {
        @Test(
            "apply the seed's VM: the guest runs on a node; stop/start by runStrategy; kill -9 of an agent re-adopts; delete removes domain and disk"
        )
        func virtualMachineLifecycle() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            let manifest = MigrationManifests.seedVM(image: bed.report.guest.bootDisk)
            let file = bed.report.directory + "/cluster.yaml"
            try manifest.write(toFile: file, atomically: true, encoding: .utf8)
            var result = try await cluster.syncctl(["apply", "-f", file])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("virtualmachine.kubevirt.io/example-decentralized-lm-vm created"))

            // The VMI is scheduled, the node starts the real guest, and its heartbeat comes.
            let vmi = try await cluster.waitFor("vmi example-decentralized-lm-vm Running") {
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "example-decentralized-lm-vm")
                return vmi["status"]?["phase"]?.string == "Running" ? vmi : nil
            }
            let nodeName = try #require(vmi["status"]?["nodeName"]?.string, "\(vmi.jsonString())")
            let node = bed.node(nodeName)
            let domainName = "default_example-decentralized-lm-vm"
            let heartbeat = HeartbeatMonitor(paths: [node.imagesDirectory + "/\(domainName).serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3, timeout: 60), "the guest booted from its DataVolume and ticks")
            // The pod network with masquerade: the guest got its address by DHCP, and the VMI reports that address.
            let reported = try await cluster.waitFor("interfaces reported") {
                let object = try await cluster.admin.get(
                    Kinds.virtualMachineInstance, name: "example-decentralized-lm-vm")
                return object["status"]?["interfaces"]?.array?.first
            }
            #expect(reported["name"] == "default" && reported["mac"]?.string?.hasPrefix("02:") == true, "\(reported)")
            let address = try #require(reported["ipAddress"]?.string, "\(reported)")
            let held = await heartbeat.waitForMessage(containing: "address eth0", timeout: 30)
            #expect(
                held == "vmsync-guest: address eth0 \(address)/24",
                "the guest holds the reported address: \(heartbeat.messages)")
            result = try await cluster.syncctl(["get", "vmi"])
            #expect(result.stdout.contains("Running") && result.stdout.contains(nodeName), "\(result.stdout)")
            result = try await cluster.syncctl(["describe", "vmi", "example-decentralized-lm-vm"])
            #expect(result.stdout.contains("LiveMigratable"), "\(result.stdout)")
            let vm = try await cluster.waitFor("vm Running") {
                let vm = try await cluster.admin.get(Kinds.virtualMachine, name: "example-decentralized-lm-vm")
                return vm["status"]?["printableStatus"]?.string == "Running" ? vm : nil
            }
            #expect(vm["status"]?["ready"] == true)
            let diskPath = node.localStorage + "/images/default-example-decentralized-lm-vm-dv.qcow2"
            #expect(
                FileManager.default.fileExists(atPath: diskPath),
                "the agent created the disk on its node's local storage")
            let labels =
                try await cluster.admin.get(Kinds.node, name: nodeName)["metadata"]?["labels"]?.stringMap ?? [:]
            #expect(
                labels.keys.contains { $0.hasPrefix("host-model-cpu.node.kubevirt.io/") },
                "the node carries its CPU-model labels")

            // kill -9 of the agent: the guest keeps running; a new agent re-adopts it without a restart.
            let ticksBefore = heartbeat.ticks.count
            await cluster.killAgent(nodeName)
            #expect(await heartbeat.waitForTicks(5), "the guest keeps running without its agent")
            try cluster.startAgent(nodeName)
            let back = try await cluster.waitForAgentBack(nodeName)
            #expect(await heartbeat.waitForTicks(5), "the guest ticks after its agent came back")
            let libvirt = try await Connection.open(node.uri)
            #expect(try await libvirt.domain(named: domainName).state() == .running)
            #expect(
                heartbeat.ticks.count > ticksBefore && heartbeat.ticks.contains { $0.arrival > back },
                "ticks from after the agent's return")
            #expect(
                heartbeat.analysis().continuous,
                "no restart: the tick counter went on across the agent's return: \(heartbeat.report)")
            #expect(
                try await cluster.admin.get(Kinds.virtualMachineInstance, name: "example-decentralized-lm-vm")[
                    "status"]?["phase"] == "Running")

            // SIGTERM of the agent: its service group stops it gracefully (exit 0, "stopped"); the guest runs on, and a
            // new agent re-adopts it.
            let stopped = await cluster.stopAgent(nodeName)
            #expect(
                stopped.status == 0 && stopped.output.contains("node-agent \(nodeName): stopped"),
                "exit \(stopped.status): \(stopped.output.suffix(2000))")
            #expect(await heartbeat.waitForTicks(3), "the guest keeps running after its agent stopped")
            try cluster.startAgent(nodeName)
            _ = try await cluster.waitForAgentBack(nodeName)
            #expect(try await libvirt.domain(named: domainName).state() == .running)
            #expect(heartbeat.analysis().continuous, "no restart across the agent's graceful stop: \(heartbeat.report)")

            // Stop and start through runStrategy; the disk survives.
            _ = try await cluster.admin.patch(
                Kinds.virtualMachine, name: "example-decentralized-lm-vm", ["spec": ["runStrategy": "Halted"]])
            _ = try await cluster.waitFor("vm Stopped") {
                let vm = try await cluster.admin.get(Kinds.virtualMachine, name: "example-decentralized-lm-vm")
                return vm["status"]?["printableStatus"]?.string == "Stopped" ? vm : nil
            }
            #expect(try await !libvirt.domainNames().contains(domainName), "the domain is gone")
            #expect(FileManager.default.fileExists(atPath: diskPath), "the disk stays while the VM is stopped")
            _ = try await cluster.admin.patch(
                Kinds.virtualMachine, name: "example-decentralized-lm-vm", ["spec": ["runStrategy": "Always"]])
            let again = try await cluster.waitFor("vmi Running again") {
                let vmi = try? await cluster.admin.get(
                    Kinds.virtualMachineInstance, name: "example-decentralized-lm-vm")
                return vmi?["status"]?["phase"]?.string == "Running" ? vmi : nil
            }
            #expect(again["status"]?["nodeName"]?.string == nodeName, "the local DataVolume binds the VMI to its node")

            // Delete: the domain and the disk go.
            result = try await cluster.syncctl(["delete", "-f", file])
            #expect(result.status == 0, "\(result.stderr)")
            _ = try await cluster.waitFor("domain and disk gone") {
                let names = try await libvirt.domainNames()
                return !names.contains(domainName) && !FileManager.default.fileExists(atPath: diskPath) ? true : nil
            }
            await libvirt.close()
        }

        @Test(
            "host paths belong to the cluster's storage: an image outside the StorageClass and import directories, a pseudo-filename, a StorageClass directory outside the storage roots (also through ..), a kernel outside the import directories — each refused with the reason on the VMI, nothing written"
        )
        func hostPaths() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            let secretDirectory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "vmsync-secret-\(UUID().uuidString.prefix(6))"
            ).path
            try FileManager.default.createDirectory(atPath: secretDirectory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: secretDirectory) }
            let secret = secretDirectory + "/secret.img"
            try Data(repeating: 0x5a, count: 1 << 20).write(to: URL(fileURLWithPath: secret))
            let evil = "/etc/vmsync-evil-\(UUID().uuidString.prefix(6))"
            try await cluster.apply(
                """
                apiVersion: storage.k8s.io/v1
                kind: StorageClass
                metadata:
                  name: local
                  annotations:
                    storageclass.kubernetes.io/is-default-class: "true"
                provisioner: vmsync.io/local
                directory: /var/lib/vmsync/images
                shared: false
                ---
                apiVersion: storage.k8s.io/v1
                kind: StorageClass
                metadata:
                  name: evil
                provisioner: vmsync.io/local
                directory: \(evil)
                shared: false
                ---
                apiVersion: storage.k8s.io/v1
                kind: StorageClass
                metadata:
                  name: dotdot
                provisioner: vmsync.io/local
                directory: /var/lib/vmsync/../../..\(evil)
                shared: false
                """, as: "classes.yaml")
            func dataVolume(_ name: String, class storageClass: String, source: JSONValue) -> JSONValue {
                [
                    "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": ["name": .string(name)],
                    "spec": [
                        "source": source,
                        "storage": [
                            "storageClassName": .string(storageClass), "resources": ["requests": ["storage": "64Mi"]],
                        ],
                    ],
                ]
            }
            func vmi(_ name: String, volume: String? = nil, kernel: String? = nil) -> JSONValue {
                var domain: JSONValue = [
                    "resources": ["requests": ["memory": "128Mi"]],
                    "devices": ["disks": [["name": "disk0", "disk": ["bus": "virtio"]]]],
                ]
                if let kernel {
                    domain["firmware"] = [
                        "kernelBoot": [
                            "kernelArgs": "console=ttyS0",
                            "container": [
                                "image": "local", "kernelPath": .string(kernel),
                                "initrdPath": .string(bed.report.guest.initrd),
                            ],
                        ]
                    ]
                }
                let disk: JSONValue =
                    volume.map { ["name": "disk0", "dataVolume": ["name": .string($0)]] } ?? [
                        "name": "disk0", "emptyDisk": ["capacity": "64Mi"],
                    ]
                return [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": ["name": .string(name)],
                    "spec": ["domain": domain, "volumes": [disk]],
                ]
            }
            let cases: [(vmi: String, dataVolume: JSONValue?, kernel: String?, reason: String)] = [
                (
                    "secret",
                    dataVolume("secret-dv", class: "local", source: ["http": ["url": .string("file://" + secret)]]),
                    nil,
                    "is outside the StorageClass directory and this node's import directories"
                ),
                (
                    "pseudo",
                    dataVolume(
                        "pseudo-dv", class: "local",
                        source: [
                            "http": ["url": .string("file://json:{\"driver\":\"file\",\"filename\":\"\(secret)\"}")]
                        ]), nil,
                    "does not name an absolute file path"
                ),
                (
                    "evil", dataVolume("evil-dv", class: "evil", source: ["blank": [:]]), nil,
                    "is not under this node's storage roots"
                ),
                (
                    "dotdot", dataVolume("dotdot-dv", class: "dotdot", source: ["blank": [:]]), nil,
                    "is not under this node's storage roots"
                ),
                ("kernel", nil, secret, "is not in this node's import directories"),
            ]
            for item in cases {
                if let dataVolume = item.dataVolume { _ = try await cluster.admin.create(Kinds.dataVolume, dataVolume) }
                _ = try await cluster.admin.create(
                    Kinds.virtualMachineInstance,
                    vmi(item.vmi, volume: item.dataVolume?["metadata"]?["name"]?.string, kernel: item.kernel))
            }
            for item in cases {
                let failed = try await cluster.waitFor("\(item.vmi) refused", timeout: 60) {
                    () async throws -> JSONValue? in
                    let object = try await cluster.admin.get(Kinds.virtualMachineInstance, name: item.vmi)
                    return object["status"]?["phase"]?.string == "Failed" ? object : nil
                }
                let message = failed["status"]?["message"]?.string ?? ""
                #expect(message.contains(item.reason), "\(item.vmi): \(message)")
            }
            // Nothing written: no image from the secret, nothing made under /etc, no domain.
            for node in bed.report.nodes {
                let images = (try? FileManager.default.contentsOfDirectory(atPath: node.localStorage + "/images")) ?? []
                #expect(
                    !images.contains { $0.hasPrefix("default-secret-dv") || $0.hasPrefix("default-pseudo-dv") },
                    "\(node.name): \(images)")
                let libvirt = try await Connection.open(node.uri)
                #expect(try await libvirt.domainNames().isEmpty, "\(node.name) started nothing")
                await libvirt.close()
            }
            #expect(!FileManager.default.fileExists(atPath: evil), "nothing made at \(evil)")
        }

        @Test(
            "a VM whose DataVolume's StorageClass does not exist yet waits — a Synchronized condition on its VMI says why, it is not Failed — and runs once the class is there"
        )
        func waitsForStorageClass() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.bootableVM("late", storageClass: "late", image: bed.report.guest.bootDisk),
                as: "late.yaml")
            let waiting = try await cluster.waitFor("the VMI says what it waits for", timeout: 60) {
                () async throws -> JSONValue? in
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "late")
                let condition = vmi["status"]?["conditions"]?.array?.first { $0["type"] == "Synchronized" }
                return condition?["status"] == "False" ? condition : nil
            }
            #expect(
                waiting["reason"] == "SyncFailed" && waiting["message"]?.string?.contains("late") == true, "\(waiting)")
            // It keeps waiting (retried with backoff), never turned into a failure.
            try await Task.sleep(for: .seconds(3))
            let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "late")
            #expect(vmi["status"]?["phase"] != "Failed", "\(vmi["status"] ?? .null)")
            try await cluster.apply(
                """
                apiVersion: storage.k8s.io/v1
                kind: StorageClass
                metadata:
                  name: late
                directory: /var/lib/vmsync/images
                shared: false
                """, as: "late-class.yaml")
            let node = try await cluster.waitForRunning("late")
            let synchronized = try await cluster.waitFor("the condition clears once it runs", timeout: 20) {
                () async throws -> JSONValue? in
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "late")
                let condition = vmi["status"]?["conditions"]?.array?.first { $0["type"] == "Synchronized" }
                return condition?["status"] == "True" ? condition : nil
            }
            #expect(synchronized["reason"] == "Synchronized")
            let heartbeat = HeartbeatMonitor(paths: [bed.node(node).imagesDirectory + "/default_late.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(2, timeout: 60), "the guest boots")
        }

        @Test(
            "a VMI that fits no node says why; when a node's agent dies the node goes NotReady and its VMIs Unknown (not deleted), and both recover"
        )
        func unschedulableAndNotReady() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed, heartbeat: 1, gracePeriod: 4)
            defer { cluster.stopAll() }
            let vmi: JSONValue = [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": "too-big"],
                "spec": [
                    "domain": [
                        "cpu": ["model": "Skylake-Client-nosuch"], "resources": ["requests": ["memory": "128Mi"]],
                    ]
                ],
            ]
            _ = try await cluster.admin.create(Kinds.virtualMachineInstance, vmi)
            let pending = try await cluster.waitFor("unschedulable condition") {
                let object = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "too-big")
                return object["status"]?["conditions"]?.array?.first {
                    $0["type"]?.string == "PodScheduled" && $0["status"]?.string == "False"
                }
            }
            #expect(pending["reason"]?.string == "Unschedulable")
            #expect(
                pending["message"]?.string?.contains("CPU model \"Skylake-Client-nosuch\" is not usable") == true,
                "\(pending)")

            // A guest on b (direct kernel boot, a scratch disk), then b's agent dies.
            let guest: JSONValue = [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": "on-b"],
                "spec": [
                    "nodeSelector": ["kubernetes.io/hostname": "b"],
                    "domain": [
                        "resources": ["requests": ["memory": "128Mi"]],
                        "devices": ["disks": [["name": "scratch", "disk": ["bus": "virtio"]]]],
                        "firmware": [
                            "kernelBoot": [
                                "kernelArgs": .string(GuestFiles.commandLine),
                                "container": [
                                    "image": "local", "kernelPath": .string(bed.report.guest.kernel),
                                    "initrdPath": .string(bed.report.guest.initrd),
                                ],
                            ]
                        ],
                    ],
                    "volumes": [["name": "scratch", "emptyDisk": ["capacity": "64Mi"]]],
                ],
            ]
            _ = try await cluster.admin.create(Kinds.virtualMachineInstance, guest)
            _ = try await cluster.waitFor("on-b Running") {
                let object = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "on-b")
                return object["status"]?["phase"]?.string == "Running" ? object : nil
            }
            let heartbeat = HeartbeatMonitor(paths: [bed.node("b").imagesDirectory + "/default_on-b.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(2, timeout: 60))

            await cluster.killAgent("b")
            let notReady = try await cluster.waitFor("node b NotReady", timeout: 30) {
                let node = try await cluster.admin.get(Kinds.node, name: "b")
                return node["status"]?["printableStatus"]?.string == "NotReady" ? node : nil
            }
            #expect(notReady["status"]?["conditions"]?.array?.first?["reason"]?.string == "NodeStatusUnknown")
            let unknown = try await cluster.waitFor("on-b Unknown", timeout: 30) {
                let object = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "on-b")
                return object["status"]?["phase"]?.string == "Unknown" ? object : nil
            }
            #expect(
                unknown["status"]?["conditions"]?.array?.contains {
                    $0["type"] == "Ready" && $0["reason"] == "NodeUnresponsive"
                } == true)
            #expect(unknown["metadata"]?["deletionTimestamp"] == nil, "reported unknown, not deleted")
            #expect(await heartbeat.waitForTicks(3), "the guest keeps running on b")
            try cluster.startAgent("b")
            _ = try await cluster.waitFor("node b Ready again", timeout: 30) {
                let node = try await cluster.admin.get(Kinds.node, name: "b")
                return node["status"]?["printableStatus"]?.string == "Ready" ? node : nil
            }
            _ = try await cluster.waitFor("on-b Running again", timeout: 30) {
                let object = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "on-b")
                return object["status"]?["phase"]?.string == "Running" ? object : nil
            }
            // The agent has acted on the VMI (it wrote Running); ticks after that show whether it restarted the guest.
            let adopted = HeartbeatMonitor.monotonicNow
            #expect(await heartbeat.waitForTicks(5))
            #expect(heartbeat.ticks.contains { $0.arrival > adopted }, "ticks from after the re-adoption")
            #expect(heartbeat.analysis().continuous, "re-adopted, not restarted: \(heartbeat.report)")
            _ = try await cluster.admin.delete(Kinds.virtualMachineInstance, name: "on-b")
            _ = try await cluster.waitFor("on-b gone") { () async throws -> Bool? in
                do {
                    _ = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "on-b")
                    return nil
                } catch {
                    return (error as? APIError)?.code == 404 ? true : nil
                }
            }
        }

        @Test(
            "a blank DataVolume on a shared StorageClass; kill -9 of the controller while agents run loses nothing, and the restarted controller drives them"
        )
        func blankVolumeAndControllerRestart() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            let images = bed.report.sharedDirectory + "/images-\(UUID().uuidString.prefix(6))"
            let manifest = """
                apiVersion: storage.k8s.io/v1
                kind: StorageClass
                metadata:
                  name: shared
                directory: \(images)
                shared: true
                ---
                apiVersion: cdi.kubevirt.io/v1beta1
                kind: DataVolume
                metadata:
                  name: scratch
                spec:
                  source:
                    blank: {}
                  storage:
                    storageClassName: shared
                    resources:
                      requests:
                        storage: 80Mi
                ---
                apiVersion: kubevirt.io/v1
                kind: VirtualMachine
                metadata:
                  name: blank-vm
                spec:
                  runStrategy: Always
                  template:
                    spec:
                      domain:
                        devices:
                          disks:
                          - name: scratch
                            disk:
                              bus: virtio
                          - name: cloudinit
                            disk:
                              bus: virtio
                        firmware:
                          kernelBoot:
                            kernelArgs: "\(GuestFiles.commandLine)"
                            container:
                              image: local
                              kernelPath: \(bed.report.guest.kernel)
                              initrdPath: \(bed.report.guest.initrd)
                        resources:
                          requests:
                            memory: 128Mi
                      volumes:
                      - name: scratch
                        dataVolume:
                          name: scratch
                      - name: cloudinit
                        cloudInitNoCloud:
                          userData: |
                            #cloud-config
                            hostname: blank-vm
                """
            let file = bed.report.directory + "/blank.yaml"
            try manifest.write(toFile: file, atomically: true, encoding: .utf8)
            var result = try await cluster.syncctl(["apply", "-f", file])
            #expect(result.status == 0, "\(result.stderr)")
            let vmi = try await cluster.waitFor("blank-vm Running") {
                let vmi = try await cluster.admin.get(Kinds.virtualMachineInstance, name: "blank-vm")
                return vmi["status"]?["phase"]?.string == "Running" ? vmi : nil
            }
            let nodeName = try #require(vmi["status"]?["nodeName"]?.string)
            let heartbeat = HeartbeatMonitor(paths: [bed.node(nodeName).imagesDirectory + "/default_blank-vm.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3, timeout: 60), "the guest runs with the blank disk")
            let seed = bed.node(nodeName).imagesDirectory + "/default_blank-vm-cloudinit-cidata.img"
            let seedData = try await run("/usr/bin/mtype", ["-i", seed, "::/user-data"])
            #expect(
                seedData.stdout.trimmingCharacters(in: .newlines) == "#cloud-config\nhostname: blank-vm",
                "the cloud-init seed: \(seedData.stderr)")
            let nodeLibvirt = try await Connection.open(bed.node(nodeName).uri)
            #expect(
                try await nodeLibvirt.domain(named: "default_blank-vm").diskTargets().count == 2,
                "the seed is attached as a second disk")
            await nodeLibvirt.close()
            let diskPath = images + "/default-scratch.qcow2"
            let info = try await run("/usr/bin/qemu-img", ["info", "--output", "json", "-U", diskPath])
            let virtualSize = try JSONValue.parse(Data(info.stdout.utf8))["virtual-size"]?.int
            #expect(
                virtualSize == 80 << 20,
                "blank of the requested size on the shared class's directory: \(info.stdout) \(info.stderr)")
            _ = try await cluster.waitFor("DataVolume Succeeded") {
                try await cluster.admin.get(Kinds.dataVolume, name: "scratch")["status"]?["phase"] == "Succeeded"
                    ? true : nil
            }
            result = try await cluster.syncctl(["describe", "vmi", "blank-vm"])
            #expect(
                result.stdout.contains("LiveMigratable") && result.stdout.contains("True"),
                "shared storage keeps it migratable: \(result.stdout)")

            // kill -9 of the controller: the guest and the agents go on; after restart the objects are as they were.
            let before = try await cluster.admin.list(Kinds.virtualMachineInstance)
            await cluster.killController()
            #expect(await heartbeat.waitForTicks(10), "the guest keeps running while the controller is down")
            try await cluster.startController()
            let after = try await cluster.admin.list(Kinds.virtualMachineInstance)
            let uids = { (list: JSONValue) in (list["items"]?.array ?? []).compactMap { $0["metadata"]?["uid"]?.string }
            }
            #expect(uids(after) == uids(before) && !uids(after).isEmpty, "same VMI after the restart")
            #expect(after["items"]?.array?.first?["status"]?["phase"] == "Running")
            let version = { (list: JSONValue) in Int(list["metadata"]?["resourceVersion"]?.string ?? "") ?? -1 }
            #expect(
                version(after) >= version(before) && version(before) > 0, "resourceVersions go on from where they were")
            let restartedAt = Resources.now()
            _ = try await cluster.waitFor("nodes still Ready, heartbeats reaching the new controller", timeout: 30) {
                let node = try await cluster.admin.get(Kinds.node, name: nodeName)
                let beat =
                    node["status"]?["conditions"]?.array?.first { $0["type"] == "Ready" }?["lastHeartbeatTime"]?.string
                    ?? ""
                return node["status"]?["printableStatus"] == "Ready" && beat > restartedAt ? true : nil
            }
            #expect(heartbeat.analysis().continuous, "the guest never stopped: \(heartbeat.report)")

            // The restarted controller and the reconnected agent still act: Halted stops the domain.
            _ = try await cluster.admin.patch(
                Kinds.virtualMachine, name: "blank-vm", ["spec": ["runStrategy": "Halted"]])
            let libvirt = try await Connection.open(bed.node(nodeName).uri)
            _ = try await cluster.waitFor("domain stopped after Halted") {
                try await libvirt.domainNames().contains("default_blank-vm") ? nil : true
            }
            result = try await cluster.syncctl(["delete", "-f", file])
            #expect(result.status == 0, "\(result.stderr)")
            _ = try await cluster.waitFor("blank disk removed") {
                FileManager.default.fileExists(atPath: diskPath) ? nil : true
            }
            #expect(!FileManager.default.fileExists(atPath: seed), "the cloud-init seed goes with its VMI")
            await libvirt.close()
        }
    }
}
