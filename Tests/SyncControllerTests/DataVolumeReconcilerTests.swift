import ClusterAPI
import ControllerRuntime
import Foundation
import SyncController
import Testing

/// The DataVolume controller on the runtime, against the real SQLite store.
@Suite("DataVolume reconciler")
struct DataVolumeReconcilerTests {
    let store: SQLiteStore

    init() throws {
        store = try SQLiteStore(
            path: FileManager.default.temporaryDirectory.appendingPathComponent(
                "dv-\(UUID().uuidString.prefix(8)).sqlite"
            ).path)
    }

    func dataVolume(_ name: String) async throws -> JSONValue {
        try await store.get(Kinds.dataVolume, namespace: "default", name: name)
    }

    func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while try await !condition() && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try await condition(), "\(what)")
    }

    func report(_ vmi: String, claim: String, node: String) async throws {
        _ = try await store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: vmi,
            mergePatch: [
                "status": [
                    "nodeName": .string(node), "phase": "Running",
                    "volumeStatus": [
                        [
                            "name": "disk",
                            "persistentVolumeClaimInfo": ["claimName": .string(claim), "capacity": ["storage": "1Gi"]],
                        ]
                    ],
                ]
            ], subresource: .status)
    }

    @Test("phases follow the nodes' volume reports; the path comes from the class; other changes write nothing")
    func phases() async throws {
        _ = try await store.create(
            Kinds.storageClass,
            [
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": ["name": "local"],
                "directory": "/srv/images",
            ])
        _ = try await store.create(
            Kinds.dataVolume,
            [
                "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": ["name": "root"],
                "spec": ["source": ["blank": [:]], "storage": ["storageClassName": "local"]],
            ])
        _ = try await store.create(
            Kinds.dataVolume,
            [
                "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": ["name": "imported"],
                "spec": ["source": ["pvc": ["name": "x"]]],
            ])
        for name in ["vm", "other"] {
            _ = try await store.create(
                Kinds.virtualMachineInstance,
                [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": ["name": .string(name)], "spec": [:],
                ])
        }
        try await ClusterControllers.running(on: store) { controllers in
            try await eventually("blank waits for its consumer") {
                try await dataVolume("root")["status"]?["phase"] == "WaitForFirstConsumer"
            }
            try await eventually("a cloned one is Pending") {
                try await dataVolume("imported")["status"]?["phase"] == "Pending"
            }
            try await report("vm", claim: "root", node: "n1")
            try await eventually("made on n1") { try await dataVolume("root")["status"]?["nodeName"] == "n1" }
            let made = try await dataVolume("root")
            #expect(made["status"]?["phase"] == "Succeeded" && made["status"]?["progress"] == "100.0%")
            #expect(made["status"]?["path"] == "/srv/images/default-root.qcow2")
            // A change of a VMI that uses no DataVolume, and one of the same VMI's unrelated status, write nothing.
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "other",
                mergePatch: ["status": ["phase": "Running"]], subresource: .status)
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "vm", mergePatch: ["status": ["reason": "x"]],
                subresource: .status)
            try await controllers.settle()
            #expect(
                try await dataVolume("root")["metadata"]?["resourceVersion"] == made["metadata"]?["resourceVersion"])
            // The VMI moved (a migration copied the local image): the DataVolume follows.
            try await report("vm", claim: "root", node: "n2")
            try await eventually("moved to n2") { try await dataVolume("root")["status"]?["nodeName"] == "n2" }
        }
    }
}
