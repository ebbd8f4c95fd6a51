public import ClusterAPI
public import ControllerRuntime
import Logging

/// Seed 000's batch migration, keyed by Node: a node tainted `kubevirt.io/drain=draining:NoSchedule` gets an
/// evacuation migration for every live-migratable VMI on it (queued behind the parallel limits like any other); VMIs
/// that cannot migrate are reported, not killed; the node's `Drained` condition says how far it is, and True once
/// every migratable VMI has left or its migration has finished (a failed one is not retried within the drain).
public struct EvacuationReconciler: Reconciler {
    public let name = "evacuation"
    let store: any ResourceStore
    let nodes: Cache<Node>
    let instances: Cache<VirtualMachineInstance>
    let migrations: Cache<VirtualMachineInstanceMigration>
    let logger: Logger

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let node = nodes[key] else { return .done }
        let existing = node.status?.conditions[Migration.drainCondition]
        guard node.isDraining else {
            if existing != nil {
                var changed = node
                changed.status?.conditions?.remove(type: Migration.drainCondition)
                try await store.write(changed, from: node, cache: nodes)
            }
            return .done
        }
        let drainStarted = existing?.drainStarted ?? Migration.timestamp()
        var migrating: [String] = []
        var waiting: [String] = []
        var failed: [String] = []
        var blocked: [String] = []
        for vmi in instances.objects(in: ClusterControllers.Index.node, key.name)
        where vmi.status?.phase == .running && !vmi.metadata.isDeleting {
            let label = vmi.key.description
            let live = vmi.status?.conditions["LiveMigratable"]
            if live?.isTrue != true {
                blocked.append("\(label) (\(live?.message ?? "live-migratability not known yet"))")
                continue
            }
            let mine = migrations.objects(in: ClusterControllers.Index.vmi, label)
            if let open = mine.first(where: { !$0.phase.isFinal }) {
                if open.phase.isActive { migrating.append(label) } else { waiting.append(label) }
                continue
            }
            let failedHere = mine.contains {
                $0.metadata.labels?[Migration.evacuationNodeLabel] == key.name && $0.phase == .failed
                    && ($0.metadata.creationTimestamp ?? "") >= String(drainStarted.prefix(19))
            }
            if failedHere {
                failed.append(label)
                continue
            }
            try await evacuate(vmi, from: key.name)
            waiting.append(label)
        }
        let done = migrating.isEmpty && waiting.isEmpty
        var parts: [String] = []
        if !migrating.isEmpty {
            parts.append("\(migrating.count) migrating (\(migrating.sorted().joined(separator: ", ")))")
        }
        if !waiting.isEmpty { parts.append("\(waiting.count) waiting (\(waiting.sorted().joined(separator: ", ")))") }
        if !failed.isEmpty {
            parts.append("\(failed.count) failed to migrate (\(failed.sorted().joined(separator: ", ")))")
        }
        if !blocked.isEmpty {
            parts.append(
                "\(blocked.count) not live-migratable, left running: \(blocked.sorted().joined(separator: "; "))")
        }
        let message = parts.isEmpty ? "no VMI left to migrate" : parts.joined(separator: "; ")
        let reason =
            done ? (failed.isEmpty && blocked.isEmpty ? "DrainComplete" : "DrainCompleteWithRemainingVMIs") : "Draining"
        var condition = Condition(Migration.drainCondition, done, reason: reason, message: message)
        condition.drainStarted = drainStarted
        var changed = node
        changed.status?.conditions.set(condition)
        try await store.write(changed, from: node, cache: nodes)
        return .done
    }

    /// Creates the evacuation migration of `vmi` (KubeVirt's `kubevirt-evacuation-` name) and marks the VMI.
    private func evacuate(_ vmi: VirtualMachineInstance, from node: String) async throws(APIError) {
        let vmim: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": [
                "name": .string(Migration.generatedName(Migration.evacuationPrefix)),
                "namespace": .string(vmi.key.namespace ?? "default"),
                "labels": [
                    .init(stringLiteral: Migration.evacuationNodeLabel): .string(node),
                    .init(stringLiteral: Migration.vmiNameLabel): .string(vmi.key.name),
                ],
            ],
            "spec": ["vmiName": .string(vmi.key.name)],
        ]
        try await store.create(vmim, as: VirtualMachineInstanceMigration.self, cache: migrations)
        if vmi.status?.evacuationNodeName != node {
            var changed = vmi
            changed.status?.evacuationNodeName = node
            try await store.write(changed, from: vmi, cache: instances)
        }
        logger.info("evacuation migration created", metadata: ["node": "\(node)", "vmi": "\(vmi.key)"])
    }
}
