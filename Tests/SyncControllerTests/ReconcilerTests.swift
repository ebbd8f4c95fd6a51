import ClusterAPI
import Foundation
import TestSupport
import Testing

@testable import NodeAgent
@testable import SyncController

/// The controller's reconcilers on the controller runtime against a real SQLite store: each change, then the
/// controllers settle.
@Suite("Reconcilers: runStrategy, scheduling, LiveMigratable")
struct ReconcilerTests {
    let store: SQLiteStore
    let path: String

    init() throws {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "reconcile-\(UUID().uuidString.prefix(8)).sqlite"
            ).path
        store = try SQLiteStore(path: path)
    }

    func node(
        _ name: String, labels: [String: String] = [:], memory: String = "1Gi", taints: [JSONValue] = [],
        ready: Bool = true
    ) async throws {
        var all = labels
        all["kubernetes.io/hostname"] = name
        all["host-model-cpu.node.kubevirt.io/EPYC"] = "true"
        all["cpu-model.node.kubevirt.io/Westmere"] = "true"
        _ = try await store.create(
            Kinds.node,
            [
                "apiVersion": "v1", "kind": "Node", "metadata": ["name": .string(name), "labels": JSONValue(all)],
                "spec": ["taints": .array(taints)],
            ])
        var condition = Resources.condition("Ready", ready, reason: "AgentReady")
        condition["lastHeartbeatTime"] = .string(Resources.now())
        _ = try await store.patch(
            Kinds.node, namespace: nil, name: name,
            mergePatch: ["status": ["allocatable": ["memory": .string(memory)], "conditions": [condition]]],
            subresource: .status)
    }

    func vmi(_ name: String, spec: JSONValue = ["domain": ["resources": ["requests": ["memory": "256Mi"]]]])
        async throws
    {
        _ = try await store.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": .string(name)],
                "spec": spec,
            ])
    }

    func get(_ name: String) async throws -> JSONValue {
        try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: name)
    }

    func condition(_ object: JSONValue, _ type: String) -> JSONValue? {
        object["status"]?["conditions"]?.array?.first { $0["type"]?.string == type }
    }

    @Test("the scheduler honours readiness, nodeSelector, taints, CPU model and memory, and says why it cannot place")
    func scheduling() async throws {
        try await node("a", labels: ["zone": "east"], memory: "512Mi")
        try await node(
            "b", labels: ["zone": "west"], memory: "2Gi",
            taints: [["key": "kubevirt.io/drain", "value": "draining", "effect": "NoSchedule"]])
        try await node("c", labels: ["zone": "west"], memory: "2Gi", ready: false)
        try await vmi(
            "east",
            spec: ["domain": ["resources": ["requests": ["memory": "256Mi"]]], "nodeSelector": ["zone": "east"]])
        try await vmi(
            "west",
            spec: ["domain": ["resources": ["requests": ["memory": "256Mi"]]], "nodeSelector": ["zone": "west"]])
        try await vmi("skylake", spec: ["domain": ["cpu": ["model": "Skylake-Client"]]])
        try await vmi("huge", spec: ["domain": ["resources": ["requests": ["memory": "8Gi"]]]])
        try await vmi(
            "tolerant",
            spec: [
                "domain": ["resources": ["requests": ["memory": "128Mi"]]], "nodeSelector": ["zone": "west"],
                "tolerations": [["key": "kubevirt.io/drain", "operator": "Exists", "effect": "NoSchedule"]],
            ])
        try await ClusterControllers.running(on: store) { controllers in
            #expect(try await get("east")["status"]?["nodeName"] == "a")
            #expect(try await get("tolerant")["status"]?["nodeName"] == "b", "tolerates the drain taint")
            let west = try #require(condition(try await get("west"), "PodScheduled"))
            #expect(west["status"] == "False" && west["reason"] == "Unschedulable")
            let message = west["message"]?.string ?? ""
            #expect(message.contains("a: node does not match nodeSelector zone=west"), "\(message)")
            #expect(message.contains("b: node has taint kubevirt.io/drain=draining:NoSchedule"), "\(message)")
            #expect(message.contains("c: node is not Ready"), "\(message)")
            #expect(
                condition(try await get("skylake"), "PodScheduled")?["message"]?.string?.contains(
                    "CPU model \"Skylake-Client\" is not usable") == true)
            #expect(
                condition(try await get("huge"), "PodScheduled")?["message"]?.string?.contains("insufficient memory")
                    == true)
            #expect(try await get("east")["status"]?["phase"] == "Scheduled")
        }
    }

    @Test("LiveMigratable is False with the seed's reasons, True otherwise")
    func liveMigratable() async throws {
        try await node("a")
        try await node("b")
        _ = try await store.create(
            Kinds.storageClass,
            [
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": ["name": "local"],
                "directory": "/var/lib/vmsync/images", "shared": false,
            ])
        _ = try await store.create(
            Kinds.storageClass,
            [
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": ["name": "nfs"],
                "directory": "/srv/shared", "shared": true,
            ])
        for (name, className, mode) in [
            ("rwo-local", "local", "ReadWriteOnce"), ("rwo-shared", "nfs", "ReadWriteOnce"),
            ("rwx-local", "local", "ReadWriteMany"),
        ] {
            _ = try await store.create(
                Kinds.dataVolume,
                [
                    "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": ["name": .string(name)],
                    "spec": [
                        "source": ["blank": [:]],
                        "storage": [
                            "storageClassName": .string(className), "accessModes": [.string(mode)],
                            "resources": ["requests": ["storage": "1Gi"]],
                        ],
                    ],
                ])
        }
        func withVolume(_ claim: String) -> JSONValue {
            [
                "domain": ["devices": ["disks": [["name": "d", "disk": ["bus": "virtio"]]]]],
                "volumes": [["name": "d", "dataVolume": ["name": .string(claim)]]],
            ]
        }
        try await vmi("plain")
        try await vmi("cdrom", spec: ["domain": ["devices": ["disks": [["name": "iso", "cdrom": ["bus": "sata"]]]]]])
        try await vmi(
            "container", spec: ["domain": [:], "volumes": [["name": "c", "containerDisk": ["image": "quay.io/x"]]]])
        try await vmi("rwo-local", spec: withVolume("rwo-local"))
        try await vmi("rwo-shared", spec: withVolume("rwo-shared"))
        try await vmi("rwx-local", spec: withVolume("rwx-local"))
        try await vmi("gpu", spec: ["domain": ["devices": ["gpus": [["name": "g", "deviceName": "nvidia.com/A100"]]]]])
        try await vmi("pinned", spec: ["domain": [:], "nodeSelector": ["kubernetes.io/hostname": "a"]])
        try await vmi(
            "one-rule",
            spec: [
                "domain": [:],
                "affinity": [
                    "nodeAffinity": [
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            "nodeSelectorTerms": [
                                [
                                    "matchExpressions": [
                                        ["key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]]
                                    ]
                                ]
                            ]
                        ]
                    ]
                ],
            ])
        try await ClusterControllers.running(on: store) { controllers in
            let expected: [(String, String, String)] = [
                ("plain", "True", "Migratable"), ("cdrom", "False", "DisksNotLiveMigratable"),
                ("container", "False", "DisksNotLiveMigratable"),
                ("rwo-local", "False", "DisksNotLiveMigratable"), ("rwo-shared", "True", "Migratable"),
                ("rwx-local", "True", "Migratable"),
                ("gpu", "False", "HostDeviceNotLiveMigratable"), ("pinned", "False", "NodeSelectorBindsOneNode"),
                ("one-rule", "False", "SchedulingRulesMatchOneNode"),
            ]
            for (name, status, reason) in expected {
                let live = try #require(condition(try await get(name), "LiveMigratable"), "\(name) has the condition")
                #expect(live["status"]?.string == status && live["reason"]?.string == reason, "\(name): \(live)")
            }
        }
    }

    @Test(
        "runStrategy: Always creates (and recreates after failure), Halted deletes, Once runs once, Manual leaves alone"
    )
    func runStrategies() async throws {
        try await node("a")
        func vm(_ name: String, _ strategy: String) async throws {
            _ = try await store.create(
                Kinds.virtualMachine,
                [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": ["name": .string(name)],
                    "spec": ["runStrategy": .string(strategy), "template": ["spec": ["domain": [:]]]],
                ])
        }
        try await vm("always", "Always")
        try await vm("halted", "Halted")
        try await vm("manual", "Manual")
        try await vm("once", "Once")
        try await vm("rerun", "RerunOnFailure")
        try await ClusterControllers.running(on: store) { controllers in
            let names = Set(
                try await store.list(Kinds.virtualMachineInstance, Selection()).items.compactMap {
                    $0["metadata"]?["name"]?.string
                })
            #expect(names == ["always", "once", "rerun"])
            let owned = try await get("always")
            #expect(owned["metadata"]?["ownerReferences"]?.array?.first?["kind"] == "VirtualMachine")
            #expect(owned["metadata"]?["finalizers"]?.array?.contains(.string(Resources.vmiFinalizer)) == true)

            // A failed VMI: Always and RerunOnFailure start a new one, Once does not.
            for name in ["always", "once", "rerun"] {
                _ = try await store.patch(
                    Kinds.virtualMachineInstance, namespace: "default", name: name,
                    mergePatch: ["status": ["phase": "Running", "nodeName": "a"]], subresource: .status)
            }
            try await controllers.settle()
            for name in ["always", "once", "rerun"] {
                _ = try await store.patch(
                    Kinds.virtualMachineInstance, namespace: "default", name: name,
                    mergePatch: ["status": ["phase": "Failed"]], subresource: .status)
            }
            try await controllers.settle()  // deletes the failed ones (finalizer released: the phase is final)
            try await controllers.settle()  // creates the replacements
            let after = try await store.list(Kinds.virtualMachineInstance, Selection()).items
            for name in ["always", "rerun"] {
                let phase = after.first { $0["metadata"]?["name"]?.string == name }?["status"]?["phase"]?.string
                #expect(phase == "Pending" || phase == "Scheduled", "\(name) recreated: \(phase ?? "gone")")
            }
            #expect(
                after.first { $0["metadata"]?["name"] == "once" }?["status"]?["phase"] == "Failed",
                "Once does not restart")

            // Halted: the VMI goes once the node reports the domain gone.
            _ = try await store.patch(
                Kinds.virtualMachine, namespace: "default", name: "always",
                mergePatch: ["spec": ["runStrategy": "Halted"]], subresource: .main)
            try await controllers.settle()
            #expect(
                try await get("always")["metadata"]?["deletionTimestamp"] != nil,
                "marked for deletion, waiting for its node")
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "always",
                mergePatch: ["status": ["phase": "Succeeded"]], subresource: .status)
            try await controllers.settle()
            await #expect(throws: APIError.self) { try await get("always") }
            try await controllers.settle()
            let vm = try await store.get(Kinds.virtualMachine, namespace: "default", name: "always")
            #expect(vm["status"]?["printableStatus"] == "Stopped")
        }
    }

    @Test(
        "objects stored before validation refused them (memory 16Ei, 1e20, vCPU counts whose product overflows) do not trap a reconcile pass"
    )
    func outOfRangeStoredObjects() async throws {
        try await node("a", memory: "4241Mi")
        try await node("b", memory: "7Ei")
        try await vmi("ei", spec: ["domain": ["resources": ["requests": ["memory": "4242Mi"]]]])
        try await vmi(
            "e20", spec: ["domain": ["memory": ["guest": 4243], "resources": ["requests": ["memory": "7Ei"]]]])
        try await vmi("seven", spec: ["domain": ["resources": ["requests": ["memory": "6Ei"]]]])
        try await vmi("cpus", spec: ["domain": ["cpu": ["cores": 511]]])
        _ = try await store.create(
            Kinds.virtualMachine,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": ["name": "huge"],
                "spec": [
                    "runStrategy": "Always",
                    "template": ["spec": ["domain": ["resources": ["requests": ["memory": "4242Mi"]]]]],
                ],
            ])
        // What an earlier version stored before these values were refused: written into the database as they were.
        let rewrite = try await run(
            "/usr/bin/sqlite3",
            [
                path,
                """
                UPDATE kv SET value = CAST(replace(replace(replace(replace(CAST(value AS TEXT), '"4241Mi"', '"16Ei"'), '"4242Mi"', '"16Ei"'), ':4243', ':1e20'),
                    '"cores":511', '"cores":4294967296,"sockets":4294967296,"threads":4294967296') AS BLOB)
                """,
            ])
        #expect(rewrite.status == 0, "\(rewrite.stderr)")
        #expect(
            try await get("ei")["spec"]?["domain"]?["resources"]?["requests"]?["memory"] == "16Ei",
            "the stored object holds the value")
        try await ClusterControllers.running(on: store) { controllers in
            try await controllers.settle()
            #expect(
                Quantity("16Ei") == nil && Quantity("1e20") == nil && Quantity(.double(1e20)) == nil
                    && Quantity("8Ei") == nil)
            #expect(Quantity("7Ei")?.bytes == 7 << 60)
            #expect(UInt64.max.saturatingAdd(1) == .max && (UInt64(1) << 63).saturatingAdd(UInt64(1) << 63) == .max)
            #expect(
                DomainMapping.vcpus(try #require(try await get("cpus")["spec"]).decode(VirtualMachineInstanceSpec.self))
                    == 64, "clamped, not overflowed")
            // The pass went on past them: the valid 7Ei VMI is placed on the node that has 7Ei, the others fit nowhere.
            #expect(try await get("seven")["status"]?["nodeName"] == "b")
            #expect(try await get("ei")["status"]?["nodeName"] == nil)
            #expect(condition(try await get("ei"), "PodScheduled")?["reason"] == "Unschedulable")
            // The VM whose template no longer validates gets no VMI and says why.
            let vm = try await store.get(Kinds.virtualMachine, namespace: "default", name: "huge")
            let failure = vm["status"]?["conditions"]?.array?.first { $0["type"] == "Failure" }
            #expect(
                failure?["reason"] == "FailedCreate" && failure?["message"]?.string?.contains("16Ei") == true,
                "\(vm["status"] ?? .null)")
        }
    }
}
