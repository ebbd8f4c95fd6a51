public import ClusterAPI
public import ControllerRuntime
import Foundation
import Logging

/// Node lifecycle, keyed by Node: a node whose agent stopped posting heartbeats for the grace period turns NotReady
/// (its Ready condition Unknown, as Kubernetes' node controller does) and the VMIs running on it Unknown — the guests
/// may still run, nobody can tell. A Ready node is looked at again when its heartbeat would go stale.
public struct NodeLifecycleReconciler: Reconciler {
    public let name = "node-lifecycle"
    let store: any ResourceStore
    let nodes: Cache<Node>
    let instances: Cache<VirtualMachineInstance>
    let readiness: NodeReadiness
    let logger: Logger

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let node = nodes[key] else { return .done }
        if let left = readiness.remaining(node) {
            if node.status?.printableStatus != "Ready" {
                var changed = node
                changed.status?.printableStatus = "Ready"
                try await store.write(changed, from: node, cache: nodes)
            }
            return .requeue(after: left + .milliseconds(100))
        }
        if let ready = node.status?.conditions["Ready"], ready.isTrue {
            var changed = node
            var unknown = Condition(
                "Ready", nil, reason: "NodeStatusUnknown", message: "node-agent stopped posting node status")
            unknown.lastHeartbeatTime = ready.lastHeartbeatTime
            changed.status?.conditions.set(unknown)
            changed.status?.printableStatus = "NotReady"
            // Only onto the node as read: a heartbeat that landed meanwhile wins.
            try await store.write(changed, from: node, guarded: true, cache: nodes)
            logger.notice("node not ready", metadata: ["node": "\(key)"])
        }
        for vmi in instances.objects(in: ClusterControllers.Index.node, key.name) where vmi.status?.phase == .running {
            var changed = vmi
            changed.status?.phase = .unknown
            changed.status?.reason = "NodeUnresponsive"
            changed.status?.conditions.set(
                Condition(
                    "Ready", nil, reason: "NodeUnresponsive",
                    message: "node \(key.name) stopped posting status; the guest may still run"))
            try await store.write(changed, from: vmi, guarded: true, cache: instances)
        }
        return .done
    }
}
