import ClusterAPI
import Foundation
import MetricsTestKit
import Testing

@testable import SyncController

/// The controller's side of migration on the controller runtime against a real SQLite store (agents' writes
/// simulated): each change, then the controllers settle.
@Suite("Reconcilers: live migration admission, limits, target choice, aborts")
struct MigrationReconcilerTests {
    let store: SQLiteStore

    init() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "migrate-\(UUID().uuidString.prefix(8)).sqlite"
        ).path
        store = try SQLiteStore(path: path)
    }

    func node(_ name: String) async throws {
        let labels: JSONValue = [
            "kubernetes.io/hostname": .string(name), "host-model-cpu.node.kubevirt.io/EPYC": "true",
            "cpu-model-migration.node.kubevirt.io/EPYC": "true",
        ]
        _ = try await store.create(
            Kinds.node, ["apiVersion": "v1", "kind": "Node", "metadata": ["name": .string(name), "labels": labels]])
        var condition = Resources.condition("Ready", true, reason: "AgentReady")
        condition["lastHeartbeatTime"] = .string(Resources.now())
        _ = try await store.patch(
            Kinds.node, namespace: nil, name: name,
            mergePatch: [
                "status": [
                    "allocatable": ["memory": "8Gi"], "conditions": [condition],
                    "tunnelEndpoint": .string("10.0.0.1:8444"),
                ]
            ], subresource: .status)
    }

    /// A running VMI on `node`, live-migratable unless `spec` says otherwise.
    func runningVMI(
        _ name: String, on node: String, spec: JSONValue = ["domain": ["resources": ["requests": ["memory": "128Mi"]]]]
    ) async throws {
        _ = try await store.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": .string(name)],
                "spec": spec,
            ])
        _ = try await store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: name,
            mergePatch: [
                "status": [
                    "phase": "Running", "nodeName": .string(node),
                    "conditions": [Resources.condition("LiveMigratable", true, reason: "Migratable")],
                ]
            ], subresource: .status)
    }

    func migrate(_ vmi: String, name: String) async throws {
        _ = try await store.create(
            Kinds.migration,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": ["name": .string(name)], "spec": ["vmiName": .string(vmi)],
            ])
    }

    func migration(_ name: String) async throws -> JSONValue {
        try await store.get(Kinds.migration, namespace: "default", name: name)
    }

    func phase(_ name: String) async throws -> String {
        try await migration(name)["status"]?["phase"]?.string ?? ""
    }

    @Test(
        "parallelMigrationsPerCluster and parallelOutboundMigrationsPerNode: excess migrations wait in Pending, saying why, and start as others finish"
    )
    func parallelLimits() async throws {
        for name in ["a", "b", "c"] { try await node(name) }
        _ = try await store.create(Kinds.kubeVirt, ClusterDefaults.kubeVirt)
        _ = try await store.patch(
            Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt",
            mergePatch: [
                "spec": [
                    "configuration": [
                        "migrations": [
                            "parallelMigrationsPerCluster": 2, "parallelOutboundMigrationsPerNode": 1,
                        ]
                    ]
                ]
            ], subresource: .main)
        try await runningVMI("v1", on: "a")
        try await runningVMI("v2", on: "a")
        try await runningVMI("v3", on: "b")
        try await runningVMI("v4", on: "c")
        for (index, vmi) in ["v1", "v2", "v3", "v4"].enumerated() { try await migrate(vmi, name: "m\(index + 1)") }
        // One pass takes each as far as it can: admitted, started within the limits (m1 from a, m3 from b; m2 waits
        // for a, m4 for the cluster), target chosen.
        let metrics = TestMetrics()
        func migrations(_ result: String) -> Int64 {
            metrics.counterTotal(label: "vmsync_migrations_total", dimensions: [("result", result)])
        }
        try await ClusterControllers.running(on: store, metrics: metrics) { controllers in
            let steps = try await migration("m1")["status"]?["phaseTransitionTimestamps"]?.array?.compactMap {
                $0["phase"]?.string
            }
            #expect(steps == ["Pending", "Scheduling", "Scheduled"])
            #expect(try await phase("m1") == "Scheduled")
            #expect(try await phase("m2") == "Pending")
            #expect(try await phase("m3") == "Scheduled")
            #expect(try await phase("m4") == "Pending")
            let queued = try await migration("m2")["status"]?["conditions"]?.array?.first { $0["type"] == "Queued" }
            #expect(
                queued?["message"]?.string?.contains("parallelOutboundMigrationsPerNode 1") == true,
                "\(queued ?? .null)")
            let clusterQueued = try await migration("m4")["status"]?["conditions"]?.array?.first {
                $0["type"] == "Queued"
            }
            #expect(
                clusterQueued?["message"]?.string?.contains("parallelMigrationsPerCluster 2") == true,
                "\(clusterQueued ?? .null)")
            let m1 = try await migration("m1")
            #expect(m1["status"]?["migrationState"]?["targetNode"]?.string != "a", "never the source")
            #expect(m1["metadata"]?["finalizers"]?.array?.contains(.string(Migration.finalizer)) == true)
            let vmi = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "v1")
            #expect(vmi["status"]?["migrationState"]?["migrationUID"] == m1["metadata"]?["uid"])
            // The configuration it runs with, as the store held it when it was scheduled, on both states (what the
            // source agent reads; a setting written just before the migration applies to it).
            for state in [m1["status"]?["migrationState"], vmi["status"]?["migrationState"]] {
                #expect(state?["migrationConfiguration"]?["parallelMigrationsPerCluster"] == 2, "\(state ?? .null)")
                #expect(state?["migrationConfiguration"]?["parallelOutboundMigrationsPerNode"] == 1)
            }
            #expect(vmi["status"]?["printableMigration"] == "Migrating")
            #expect(
                try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "v2")["status"]?[
                    "printableMigration"] == "Pending migration")

            // m1 finishes (as its source agent would write it): m2 may leave a now.
            let typed = try VirtualMachineInstanceMigration(json: m1)
            var succeeded = typed
            succeeded.transition(to: .succeeded)
            _ = try await typed.write(succeeded, guarded: true) { (patch, status) async throws(APIError) -> JSONValue in
                try await store.patch(
                    Kinds.migration, namespace: "default", name: "m1", mergePatch: patch,
                    subresource: status ? .status : .main)
            }
            try await controllers.settle()
            #expect(try await phase("m2") == "Scheduled")
            #expect(try await phase("m4") == "Pending", "still two running: m2 and m3")
            // Counted once, when the controller saw it end (the watch event of the agent's write after the cache's).
            #expect(migrations("succeeded") == 1 && migrations("failed") == 0 && migrations("aborted") == 0)
            #expect(
                metrics.counterTotal(label: "vmsync_reconcile_total", dimensions: [("controller", "migration")]) > 0)
            _ = try await store.patch(
                Kinds.migration, namespace: "default", name: "m1",
                mergePatch: ["metadata": ["labels": ["seen": "again"]]], subresource: .main)
            try await controllers.settle()
            #expect(migrations("succeeded") == 1, "a change of a finished migration is no second end")
        }
    }

    @Test(
        "bad migrations fail with a reason: unknown VMI, VMI not running, not live-migratable; deleting one before it runs fails it as aborted and lets it go"
    )
    func admissionAndAbort() async throws {
        for name in ["a", "b"] { try await node(name) }
        try await migrate("nosuch", name: "m-missing")
        try await runningVMI(
            "stuck", on: "a", spec: ["domain": ["devices": ["disks": [["name": "cd", "cdrom": ["bus": "sata"]]]]]])
        _ = try await store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: "stuck",
            mergePatch: [
                "status": [
                    "conditions": [
                        Resources.condition(
                            "LiveMigratable", false, reason: "DisksNotLiveMigratable",
                            message: "disk \"cd\" is a CD-ROM")
                    ]
                ]
            ], subresource: .status)
        try await migrate("stuck", name: "m-stuck")
        try await runningVMI("ok", on: "a")
        try await migrate("ok", name: "m-ok")
        // Stored directly (past the API's admission): the later of two migrations of one VMI fails.
        try await migrate("ok", name: "m-ok-twice")
        let metrics = TestMetrics()
        func migrations(_ result: String) -> Int64 {
            metrics.counterTotal(label: "vmsync_migrations_total", dimensions: [("result", result)])
        }
        try await ClusterControllers.running(on: store, metrics: metrics) { controllers in
            let twice = try await migration("m-ok-twice")
            #expect(
                twice["status"]?["phase"] == "Failed"
                    && twice["status"]?["conditions"]?.array?.first?["reason"] == "MigrationInProgress", "\(twice)")
            let missing = try await migration("m-missing")
            #expect(missing["status"]?["phase"] == "Failed")
            #expect(missing["status"]?["conditions"]?.array?.first?["reason"] == "VMINotFound")
            let stuck = try await migration("m-stuck")
            #expect(stuck["status"]?["conditions"]?.array?.first?["reason"] == "DisksNotLiveMigratable")
            #expect(stuck["status"]?["migrationState"]?["failureReason"]?.string?.contains("is a CD-ROM") == true)

            #expect(try await phase("m-ok") == "Scheduled")
            // The controllers fail the deleted migration and then let it go at once: its history shows both.
            let history = try await store.watch(
                Kinds.migration, Selection(), from: try await store.list(Kinds.kubeVirt, Selection()).resourceVersion)
            _ = try await store.delete(Kinds.migration, namespace: "default", name: "m-ok", precondition: nil)
            try await controllers.settle()
            var seen: [WatchEvent] = []
            for await event in history where event.object["metadata"]?["name"] == "m-ok" {
                seen.append(event)
                if event.type == .deleted { break }
            }
            let aborted = try #require(seen.last { $0.type == .modified }?.object)
            #expect(
                aborted["status"]?["phase"] == "Failed"
                    && aborted["status"]?["migrationState"]?["abortStatus"] == "Succeeded", "\(aborted)")
            let vmi = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "ok")
            #expect(
                vmi["status"]?["migrationState"]?["abortStatus"] == "Succeeded"
                    && vmi["status"]?["migrationState"]?["failed"] == true)
            #expect(seen.last?.type == .deleted, "released once failed: \(seen.map(\.type))")
            await #expect(throws: APIError.self) { try await migration("m-ok") }
            // Refused (three) and aborted (one), each counted once by result; none succeeded.
            #expect(
                migrations("failed") == 3 && migrations("aborted") == 1 && migrations("succeeded") == 0,
                "failed \(migrations("failed")), aborted \(migrations("aborted")), succeeded \(migrations("succeeded"))"
            )
        }
    }

    @Test(
        "a drain creates an evacuation migration per live-migratable VMI, reports progress in the Drained condition, and keeps the node's other conditions"
    )
    func drainKeepsConditions() async throws {
        for name in ["a", "b"] { try await node(name) }
        try await runningVMI("v1", on: "a")
        _ = try await store.patch(
            Kinds.node, namespace: nil, name: "a",
            mergePatch: [
                "spec": [
                    "taints": [
                        ["key": "kubevirt.io/drain", "value": "draining", "effect": "NoSchedule"]
                    ]
                ]
            ], subresource: .main)
        try await ClusterControllers.running(on: store) { controllers in
            let evacuations = try await store.list(Kinds.migration, Selection()).items
            #expect(
                evacuations.count == 1
                    && evacuations.first?["metadata"]?["name"]?.string?.hasPrefix(Migration.evacuationPrefix) == true,
                "\(evacuations)")
            #expect(evacuations.first?["metadata"]?["labels"]?[Migration.evacuationNodeLabel] == "a")
            let node = try await store.get(Kinds.node, namespace: nil, name: "a")
            let types = Set((node["status"]?["conditions"]?.array ?? []).compactMap { $0["type"]?.string })
            #expect(
                types == ["Ready", "Drained"], "the drain's condition is added beside Ready, not in its place: \(types)"
            )
            let drained = node["status"]?["conditions"]?.array?.first { $0["type"] == "Drained" }
            #expect(drained?["status"] == "False" && drained?["reason"] == "Draining", "\(drained ?? .null)")
            let vmi = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "v1")
            #expect(vmi["status"]?["evacuationNodeName"] == "a")
        }
    }
}
