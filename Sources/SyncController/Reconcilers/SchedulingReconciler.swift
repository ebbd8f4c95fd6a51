public import ClusterAPI
public import ControllerRuntime
import Logging

/// Placing VMIs, keyed by VMI: a pending VMI without a node goes to the Ready node that satisfies its rules
/// (`Placement`) and has the most memory left; when none does, its `PodScheduled` condition says, node by node, why.
public struct SchedulingReconciler: Reconciler {
    public let name = "scheduling"
    let store: any ResourceStore
    let instances: Cache<VirtualMachineInstance>
    let nodes: Cache<Node>
    let placement: Placement
    let logger: Logger

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let vmi = instances[key], Self.awaitsNode(vmi) else { return .done }
        let used = Placement.memoryInUse(instances.unordered, migrationTargets: false)
        let candidates = nodes.all
        var reasons: [String] = []
        var fit = MemoryFit()
        for node in candidates {
            if let reason = placement.unfit(vmi, on: node)
                ?? fit.consider(node, needing: vmi.requestedMemory, used: used)
            {
                reasons.append("\(node.name): \(reason)")
            }
        }
        var changed = vmi
        var status = vmi.status ?? VirtualMachineInstance.Status()
        if let best = fit.best {
            status.phase = .scheduled
            status.nodeName = best.name
            status.conditions.set(
                Condition("PodScheduled", true, reason: "Scheduled", message: "placed on node \(best.name)"))
            changed.status = status
            // Only onto the VMI as read: a placement decided on a stale view is refused and decided again.
            try await store.write(changed, from: vmi, guarded: true, cache: instances)
            logger.info("VMI scheduled", metadata: ["vmi": "\(key)", "node": "\(best.name)"])
        } else {
            let message =
                "0/\(candidates.count) nodes are available"
                + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; "))
            let before = status.conditions
            status.conditions.set(Condition("PodScheduled", false, reason: "Unschedulable", message: message))
            guard status.conditions != before else { return .done }
            status.phase = .pending
            changed.status = status
            try await store.write(changed, from: vmi, cache: instances)
        }
        return .done
    }

    /// Whether the VMI waits for a node: not being deleted, on no node, Pending (or without a phase yet).
    static func awaitsNode(_ vmi: VirtualMachineInstance) -> Bool {
        !vmi.metadata.isDeleting && vmi.nodeName == nil && (vmi.status?.phase == nil || vmi.status?.phase == .pending)
            && vmi.metadata.annotations?[Migration.receiverAnnotation] == nil
    }
}
