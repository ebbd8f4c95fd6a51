import ClusterAPI
import Foundation
import TestSupport
import Testing

/// The typed resources: decoding stored objects, writing back only what changed, and never losing fields they do not
/// model.
@Suite("Typed resources")
struct ResourceModelTests {
    @Test("the seed's VirtualMachine and DataVolume read as typed objects")
    func seedManifests() throws {
        let documents = try YAML.documents(seedVirtualMachine)
        let vm = try #require(documents.first { $0["kind"] == "VirtualMachine" })
        let typed = try VirtualMachine(json: vm)
        #expect(typed.metadata.name == vm["metadata"]?["name"]?.string)
        #expect(
            typed.runStrategy.rawValue
                == (vm["spec"]?["runStrategy"]?.string ?? (vm["spec"]?["running"]?.bool == true ? "Always" : "Halted")))
        #expect(typed.spec.template?.spec?.volumes?.count == vm["spec"]?["template"]?["spec"]?["volumes"]?.array?.count)
        for document in documents where document["kind"] == "DataVolume" {
            let dataVolume = try DataVolume(json: document)
            #expect(
                dataVolume.storage?.storageClassName
                    == (document["spec"]?["storage"] ?? document["spec"]?["pvc"])?["storageClassName"]?.string)
        }
    }

    @Test("a changed status is written as the merge patch of the changed fields; unknown fields stay in the envelope")
    func patchOfChangedFields() throws {
        let stored: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": ["name": "a", "namespace": "default", "resourceVersion": "7", "futureField": ["x": 1]],
            "spec": [
                "domain": ["devices": ["disks": [["name": "root", "disk": ["bus": "virtio"]]]]], "unmodelled": true,
            ],
            "status": [
                "phase": "Scheduled", "nodeName": "n1", "guestOSInfo": ["name": "tiny"],
                "migrationState": ["sourceNode": "n1", "futureFlag": true],
            ],
        ]
        let vmi = try VirtualMachineInstance(json: stored)
        #expect(vmi.phase == .scheduled && vmi.nodeName == "n1")
        #expect(vmi.patch(to: vmi) == (nil, nil), "nothing changed, nothing to write")
        var changed = vmi
        changed.status?.phase = .running
        changed.status?.nodeName = nil
        changed.status?.migrationState?.targetNode = "n2"
        changed.status?.conditions.set(Condition("Ready", true, reason: "Running"))
        let (main, status) = vmi.patch(to: changed)
        #expect(main == nil)
        let patch = try #require(status)
        #expect(patch["status"]?["phase"] == "Running")
        #expect(patch["status"]?["nodeName"] == .null, "a removed field is removed")
        #expect(patch["status"]?["migrationState"] == ["targetNode": "n2"])
        #expect(patch["status"]?["guestOSInfo"] == nil)
        let written = stored.merged(with: patch)
        #expect(
            written["status"]?["guestOSInfo"] == ["name": "tiny"], "a status field the type does not model survives")
        #expect(written["status"]?["migrationState"]?["futureFlag"] == true)
        #expect(written["metadata"]?["futureField"] == ["x": 1] && written["spec"]?["unmodelled"] == true)
        #expect(written["spec"]?["domain"]?["devices"]?["disks"]?.array?.first?["disk"] == ["bus": "virtio"])
        #expect(try VirtualMachineInstance(json: written) == changed)
    }

    @Test("an unknown phase reads as the fallback and is not rewritten")
    func unknownPhase() throws {
        let stored: JSONValue = [
            "metadata": ["name": "m"], "spec": ["vmiName": "a"], "status": ["phase": "FromTheFuture"],
        ]
        let migration = try VirtualMachineInstanceMigration(json: stored)
        #expect(migration.phase == .new)
        var changed = migration
        changed.status?.conditions.set(Condition("Queued", true, reason: "ParallelLimit"))
        let patch = try #require(migration.patch(to: changed).status)
        #expect(patch["status"]?["phase"] == nil, "the phase nobody changed is not written")
    }

    @Test("a malformed object is an error naming it, not a crash")
    func malformed() {
        #expect(throws: APIError.self) {
            try VirtualMachineInstanceMigration(json: ["metadata": ["name": "broken"], "spec": ["vmiName": 5]])
        }
        do {
            _ = try VirtualMachineInstanceMigration(json: ["metadata": ["name": "broken"], "spec": [:]])
            Issue.record("decoded without its vmiName")
        } catch {
            #expect(error.code == 422 && error.message.contains("\"broken\""), "\(error.message)")
        }
    }

    @Test("conditions: set keeps the transition time when only the message changes, and changes nothing when equal")
    func conditions() {
        var list: [Condition] = []
        list.set(Condition("Ready", true, reason: "A"))
        var old = list
        old[0].lastTransitionTime = "2020-01-01T00:00:00Z"
        list = old
        list.set(Condition("Ready", true, reason: "A"))
        #expect(list == old)
        list.set(Condition("Ready", true, reason: "A", message: "more"))
        #expect(list[0].message == "more" && list[0].lastTransitionTime == "2020-01-01T00:00:00Z")
        list.set(Condition("Ready", false, reason: "B"))
        #expect(list["Ready"]?.status == .false && list[0].lastTransitionTime != "2020-01-01T00:00:00Z")
    }

    @Test("KubeVirt's migration defaults apply where the configuration is silent")
    func kubeVirtDefaults() throws {
        let empty = try KubeVirt(json: ["metadata": ["name": "kubevirt", "namespace": "kubevirt"], "spec": [:]])
        #expect(empty.migrations.parallelPerCluster == 5 && empty.migrations.parallelOutboundPerNode == 2)
        #expect(empty.migrations.unschedulableTimeout == 300 && empty.migrations.prepareTimeout == 120)
        let defaults = KubeVirt()
        #expect(defaults.isEnabled("DecentralizedLiveMigration"))
        #expect(defaults.json["spec"]?["configuration"]?["migrations"]?["completionTimeoutPerGiB"] == 150)
    }

    @Test(
        "merge patch diff",
        arguments: [
            (["a": 1] as JSONValue, ["a": 1] as JSONValue, JSONValue?.none),
            (["a": 1, "b": 2], ["a": 1], ["b": .null]),
            (["a": ["b": 1, "c": 2]], ["a": ["b": 1, "c": 3]], ["a": ["c": 3]]),
            (["a": [1, 2]], ["a": [1]], ["a": [1]]),
            (["a": 1], ["a": 1, "n": .null], nil),
        ] as [(JSONValue, JSONValue, JSONValue?)])
    func mergePatchDiff(old: JSONValue, new: JSONValue, expected: JSONValue?) {
        let patch = JSONValue.mergePatch(from: old, to: new)
        #expect(patch == expected)
        if let patch { #expect(old.merged(with: patch) == new.merged(with: [:])) }
    }

    @Test(
        "a VMI's spec as a node maps it to a domain: CPU counts, memory, disks, interfaces, networks, direct boot and every volume source, with unmodelled fields left in the envelope"
    )
    func instanceSpecForTheAgent() throws {
        let stored: JSONValue = [
            "metadata": ["name": "v", "namespace": "default", "uid": "u-1", "resourceVersion": "3"],
            "spec": [
                "domain": [
                    "cpu": ["model": "qemu64", "cores": 2, "sockets": 1, "threads": 2, "features": [["name": "pcid"]]],
                    "memory": ["guest": "256Mi"],
                    "devices": [
                        "disks": [
                            ["name": "root", "disk": ["bus": "virtio", "readonly": true], "serial": "s1"],
                            ["name": "ci", "cdrom": ["bus": "sata"]],
                        ],
                        "interfaces": [
                            [
                                "name": "default", "masquerade": [:], "macAddress": "52:54:00:00:00:01",
                                "ports": [["port": 80]],
                            ]
                        ],
                    ],
                    "firmware": [
                        "uuid": "2f9c7d0e-0000-4000-8000-000000000001", "bootloader": ["efi": [:]],
                        "kernelBoot": [
                            "kernelArgs": "console=ttyS0 quiet",
                            "container": ["image": "i", "kernelPath": "/k", "initrdPath": "/i"],
                        ],
                    ],
                ],
                "networks": [["name": "default", "pod": [:]], ["name": "vlan", "multus": ["networkName": "vlan10"]]],
                "volumes": [
                    ["name": "root", "dataVolume": ["name": "dv"]],
                    ["name": "claim", "persistentVolumeClaim": ["claimName": "pvc", "readOnly": true]],
                    ["name": "scratch", "emptyDisk": ["capacity": "1Gi"]],
                    [
                        "name": "ci",
                        "cloudInitNoCloud": ["userDataBase64": "I2Nsb3VkLWNvbmZpZw==", "networkData": "version: 2"],
                    ],
                    ["name": "cd", "containerDisk": ["image": "quay.io/x"]],
                ],
            ],
        ]
        let vmi = try VirtualMachineInstance(json: stored)
        let domain = try #require(vmi.spec.domain)
        #expect(
            domain.cpu?.cores == 2 && domain.cpu?.sockets == 1 && domain.cpu?.threads == 2
                && vmi.spec.cpuModel() == "qemu64")
        #expect(Quantity(domain.memory?.guest)?.bytes == 256 << 20)
        #expect(
            domain.devices?.disks?.map(\.name) == ["root", "ci"] && domain.devices?.disks?[0].disk?.readonly == true)
        #expect(domain.devices?.disks?[1].cdrom != nil && domain.devices?.disks?[1].disk == nil)
        let interface = try #require(domain.devices?.interfaces?.first)
        #expect(
            interface.name == "default" && interface.masquerade != nil && interface.bridge == nil
                && interface.macAddress == "52:54:00:00:00:01")
        #expect(domain.firmware?.uuid == "2f9c7d0e-0000-4000-8000-000000000001")
        #expect(
            domain.firmware?.kernelBoot?.kernelArgs == "console=ttyS0 quiet"
                && domain.firmware?.kernelBoot?.container?.kernelPath == "/k")
        #expect(domain.firmware?.kernelBoot?.container?.initrdPath == "/i")
        #expect(
            vmi.spec.networks?.map(\.name) == ["default", "vlan"] && vmi.spec.networks?[0].pod != nil
                && vmi.spec.networks?[1].multus != nil)
        let volumes = try #require(vmi.spec.volumes)
        #expect(volumes.map(\.claimName) == ["dv", "pvc", nil, nil, nil])
        #expect(Quantity(volumes[2].emptyDisk?.capacity)?.bytes == 1 << 30)
        #expect(volumes[3].cloudInitNoCloud == .init(userDataBase64: "I2Nsb3VkLWNvbmZpZw==", networkData: "version: 2"))
        #expect(volumes[4].containerDisk != nil)

        // Nothing changed, nothing to write; a change writes only itself and the envelope keeps the rest.
        #expect(vmi.patch(to: vmi) == (nil, nil))
        var changed = vmi
        changed.spec.domain?.firmware?.kernelBoot?.kernelArgs = "console=ttyS0"
        let patch = try #require(vmi.patch(to: changed).main)
        #expect(patch == ["spec": ["domain": ["firmware": ["kernelBoot": ["kernelArgs": "console=ttyS0"]]]]])
        let written = stored.merged(with: patch)
        #expect(
            written["spec"]?["domain"]?["firmware"]?["bootloader"] == ["efi": [:]],
            "a firmware field the type does not model survives")
        #expect(written["spec"]?["domain"]?["cpu"]?["features"] == [["name": "pcid"]])
        #expect(try VirtualMachineInstance(json: written) == changed)
        // The unmodelled fields are not in the typed view.
        #expect(vmi.json["spec"]?["domain"]?["devices"]?["interfaces"]?.array?.first?["ports"] == nil)
        #expect(vmi.json["spec"]?["domain"]?["devices"]?["disks"]?.array?.first?["serial"] == nil)
    }

    @Test(
        "what a node reports in a VMI's status — phase and message, volumes, interfaces, console, the migration's progress and figures — is written as the merge of just what changed"
    )
    func instanceStatusFromTheAgent() throws {
        let stored: JSONValue = [
            "metadata": ["name": "v", "namespace": "default", "resourceVersion": "9"], "spec": [:],
            "status": [
                "phase": "Running", "nodeName": "a", "guestOSInfo": ["name": "tiny", "kernel": "6.1"],
                "migrationState": [
                    "migrationUid": "m-1",
                    "progress": ["phase": "Memory", "iteration": 2, "diskTotalBytes": 64, "futureRate": 1],
                ],
            ],
        ]
        let vmi = try VirtualMachineInstance(json: stored)
        #expect(
            vmi.status?.migrationState?.progress?.phase == "Memory"
                && vmi.status?.migrationState?.progress?.iteration == 2)
        #expect(vmi.status?.guestOSInfo?["kernel"] == "6.1")

        // The statistics a target records after the hand-over: the disk figures stay as the source reported them.
        var record = MigrationState()
        var progress = MigrationState.Progress(phase: "Completed")
        progress.dataTotalBytes = 4096
        record.progress = progress
        record.downtimeMilliseconds = 12
        record.libvirtJobEndTimestamp = "2026-12-07T06:00:00.000Z"
        var base = vmi
        base.status = nil
        var changed = vmi
        changed.status = VirtualMachineInstance.Status(migrationState: record)
        let patch = try #require(base.patch(to: changed).status)
        #expect(
            patch == [
                "status": [
                    "migrationState": [
                        "progress": ["phase": "Completed", "dataTotalBytes": 4096], "downtimeMilliseconds": 12,
                        "libvirtJobEndTimestamp": "2026-12-07T06:00:00.000Z",
                    ]
                ]
            ], "only the fields set, nothing removed")
        let written = stored.merged(with: patch)
        #expect(
            written["status"]?["migrationState"]?["progress"]?["diskTotalBytes"] == 64
                && written["status"]?["migrationState"]?["progress"]?["futureRate"] == 1)
        #expect(
            written["status"]?["phase"] == "Running" && written["status"]?["migrationState"]?["migrationUid"] == "m-1")

        // A started domain: phase, volumes, interfaces and console, each written as itself.
        var started = vmi
        started.status?.message = "started"
        started.status?.volumeStatus = [
            .init(
                name: "root", phase: "Ready", reason: "VolumeReady",
                persistentVolumeClaimInfo: .init(
                    claimName: "dv", capacity: ["storage": "67108864"], shared: false, storageClass: "local",
                    path: "/images/default-dv.qcow2"))
        ]
        var interface = VirtualMachineInstance.InterfaceStatus(name: "default", mac: "02:00:00:00:00:01")
        interface.ipAddress = "10.0.2.15"
        interface.ipAddresses = ["10.0.2.15"]
        interface.queueCount = 1
        started.status?.interfaces = [interface]
        started.status?.launcherDomain = "default_v"
        let status = try #require(vmi.patch(to: started).status)
        #expect(
            status["status"]?["volumeStatus"] == [
                [
                    "name": "root", "phase": "Ready", "reason": "VolumeReady",
                    "persistentVolumeClaimInfo": [
                        "claimName": "dv", "capacity": ["storage": "67108864"], "shared": false,
                        "storageClass": "local", "path": "/images/default-dv.qcow2",
                    ],
                ]
            ])
        #expect(
            status["status"]?["interfaces"] == [
                [
                    "name": "default", "mac": "02:00:00:00:00:01", "queueCount": 1, "ipAddress": "10.0.2.15",
                    "ipAddresses": ["10.0.2.15"],
                ]
            ])
        #expect(status["status"]?["launcherDomain"] == "default_v" && status["status"]?["message"] == "started")
        #expect(status["status"]?["guestOSInfo"] == nil && status["status"]?["phase"] == nil)
        #expect(try VirtualMachineInstance(json: stored.merged(with: status)) == started)
    }

    @Test("DataVolume source and size, and a Node's addresses and run directory, read leniently")
    func dataVolumeAndNode() throws {
        let dataVolume = try DataVolume(json: [
            "metadata": ["name": "d", "namespace": "default"],
            "spec": [
                "source": ["http": ["url": "file:///images/tiny.qcow2"]],
                "pvc": ["storageClassName": "local", "resources": ["requests": ["storage": "64Mi"]]],
            ],
            "status": ["path": "/images/default-d.qcow2"],
        ])
        #expect(
            dataVolume.spec.source?.http?.url == "file:///images/tiny.qcow2" && dataVolume.spec.source?.blank == nil)
        #expect(dataVolume.storage?.storageClassName == "local" && dataVolume.storage?.requestedBytes == 64 << 20)
        #expect(dataVolume.status?.path == "/images/default-d.qcow2")
        let blank = try DataVolume(json: [
            "metadata": ["name": "b"], "spec": ["source": ["blank": [:]], "storage": [:]],
        ])
        #expect(blank.spec.source?.blank != nil && blank.storage?.requestedBytes == 0)

        let node = try Node(json: [
            "metadata": ["name": "a"],
            "status": [
                "addresses": [["type": "InternalIP", "address": "10.0.0.11"], ["address": "a"]],
                "runDirectory": "/run/vmsync",
                "libvirtURI": "qemu:///system", "tunnelEndpoint": "10.0.0.11:8444",
                "nodeInfo": ["kubeletVersion": "vmsync-node-agent"],
            ],
        ])
        #expect(node.status?.addresses?.first == Node.Address(type: "InternalIP", address: "10.0.0.11"))
        #expect(node.status?.addresses?.last?.type == nil, "an address without a type still reads")
        #expect(
            node.status?.runDirectory == "/run/vmsync" && node.status?.tunnelEndpoint == "10.0.0.11:8444"
                && node.status?.libvirtURI == "qemu:///system")
    }

    @Test(
        "Resource.write: only what changed, the main resource before /status; a write that replaces an array carries the resourceVersion it was computed from, the status write the version the main write made"
    )
    func writeRule() async throws {
        let stored: JSONValue = [
            "metadata": ["name": "n", "resourceVersion": "5", "labels": ["a": "1"]],
            "status": [
                "conditions": [["type": "Ready", "status": "True", "reason": "AgentReady"]], "runDirectory": "/run/a",
            ],
        ]
        let node = try Node(json: stored)
        var calls: [(JSONValue, Bool)] = []
        func record(_ patch: JSONValue, _ status: Bool) async throws(APIError) -> JSONValue {
            calls.append((patch, status))
            var result = stored.merged(with: patch)
            result["metadata"]?["resourceVersion"] = .string(String(5 + calls.count))
            return result
        }
        #expect(try await node.write(node, through: record) == nil && calls.isEmpty, "nothing changed, nothing written")

        var scalar = node
        scalar.status?.runDirectory = "/run/b"
        _ = try await node.write(scalar, through: record)
        #expect(
            calls.count == 1 && calls[0].1 && calls[0].0 == ["status": ["runDirectory": "/run/b"]],
            "no array, no precondition")

        calls = []
        var both = node
        both.metadata.labels?["b"] = "2"
        both.status?.conditions.set(Condition("Drained", false, reason: "NotDraining"))
        let stored2 = try #require(try await node.write(both, through: record))
        #expect(calls.count == 2 && !calls[0].1 && calls[1].1)
        #expect(
            calls[0].0 == ["metadata": ["labels": ["b": "2"], "resourceVersion": "5"]], "guarded by the version read")
        #expect(calls[1].0["metadata"] == ["resourceVersion": "6"], "then by the version the main write made")
        #expect(calls[1].0["status"]?["conditions"]?.array?.count == 2)
        #expect(stored2["metadata"]?["resourceVersion"] == "7")

        calls = []
        _ = try await node.write(scalar, guarded: true, through: record)
        #expect(calls[0].0["metadata"] == ["resourceVersion": "5"], "asked to be guarded")
    }

    @Test(
        "a migration's transition appends to its phase history, and its write lands only on the version it was computed from"
    )
    func typedTransition() async throws {
        let stored: JSONValue = [
            "metadata": ["name": "m", "namespace": "default", "resourceVersion": "11"], "spec": ["vmiName": "v"],
            "status": [
                "phase": "Running",
                "phaseTransitionTimestamps": [
                    ["phase": "Running", "phaseTransitionTimestamp": "2026-12-07T06:00:00.000Z"]
                ],
                "migrationState": ["sourceNode": "a", "targetNode": "b"],
            ],
        ]
        let vmim = try VirtualMachineInstanceMigration(json: stored)
        var succeeded = vmim
        succeeded.status?.migrationState?.completed = true
        succeeded.transition(to: .succeeded)
        #expect(
            succeeded.phase == .succeeded
                && succeeded.status?.phaseTransitionTimestamps?.map(\.phase) == [.running, .succeeded])
        var written: JSONValue?
        _ = try await vmim.write(succeeded) { (patch, status) async throws(APIError) -> JSONValue in
            #expect(status)
            written = patch
            return stored.merged(with: patch)
        }
        let patch = try #require(written)
        #expect(patch["metadata"] == ["resourceVersion": "11"])
        #expect(patch["status"]?["phase"] == "Succeeded" && patch["status"]?["migrationState"] == ["completed": true])
        #expect(patch["status"]?["phaseTransitionTimestamps"]?.array?.count == 2)
        #expect(
            try VirtualMachineInstanceMigration(json: stored.merged(with: patch)).status?.migrationState?.sourceNode
                == "a")
    }
}
