import ClusterAPI
import ControllerRuntime
import Foundation

/// Whether a node's agent is alive: its Ready condition True with a heartbeat younger than the grace period. The one
/// rule every reconciler asks; the node lifecycle reconciler writes NotReady when a heartbeat goes stale.
public struct NodeReadiness: Sendable {
    /// How long a node may go without a heartbeat before it is NotReady (Kubernetes: 40 s).
    public var gracePeriod: Duration

    public init(gracePeriod: Duration = .seconds(40)) {
        self.gracePeriod = gracePeriod
    }

    /// The node's last heartbeat, if its Ready condition is True.
    func heartbeat(of node: Node) -> Date? {
        guard let ready = node.status?.conditions["Ready"], ready.isTrue else { return nil }
        return ready.lastHeartbeatTime.flatMap { try? Date($0, strategy: .iso8601) }
    }

    /// How long the node stays Ready without another heartbeat (nil: it is not Ready now).
    func remaining(_ node: Node, at now: Date = .now) -> Duration? {
        guard let heartbeat = heartbeat(of: node) else { return nil }
        let left = Double(gracePeriod.components.seconds) - now.timeIntervalSince(heartbeat)
        return left > 0 ? .milliseconds(Int64(left * 1000)) : nil
    }

    /// Whether the node is Ready now.
    func isReady(_ node: Node, at now: Date = .now) -> Bool { remaining(node, at: now) != nil }
}

/// The scheduling rules a VMI and a node must satisfy (readiness, cordon, taints, nodeSelector, required affinity,
/// CPU model, local volumes), shared by placing a new VMI, choosing a migration's target and LiveMigratable.
struct Placement: Sendable {
    let readiness: NodeReadiness
    let dataVolumes: Cache<DataVolume>

    /// Why `vmi` cannot run on `node` (nil: it can). Capacity is checked separately (`MemoryFit`).
    func unfit(_ vmi: VirtualMachineInstance, on node: Node, ignoreReadiness: Bool = false, checkVolumes: Bool = true)
        -> String?
    {
        let labels = node.labels
        let spec = vmi.spec
        if !ignoreReadiness {
            if !readiness.isReady(node) { return "node is not Ready" }
            if node.spec?.unschedulable == true { return "node is cordoned (unschedulable)" }
            for taint in node.spec?.taints ?? [] where ["NoSchedule", "NoExecute"].contains(taint.effect) {
                if !(spec.tolerations ?? []).contains(where: { $0.tolerates(taint) }) {
                    return "node has taint \(taint.key)=\(taint.value ?? ""):\(taint.effect) the VMI does not tolerate"
                }
            }
        }
        for (key, value) in spec.nodeSelector ?? [:] where labels[key] != value {
            return "node does not match nodeSelector \(key)=\(value)"
        }
        if let terms = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms,
            !terms.isEmpty
        {
            let matches = terms.contains { term in (term.matchExpressions ?? []).allSatisfy { $0.matches(labels) } }
            if !matches { return "node does not match the VMI's required node affinity" }
        }
        if let reason = cpu(of: vmi).unsatisfied(toRunOn: labels) { return reason }
        // A local (non-shared) DataVolume already written on one node binds the VMI there.
        for claim in (spec.volumes ?? []).compactMap(\.claimName) where checkVolumes {
            guard let dataVolume = dataVolumes[ObjectKey(namespace: vmi.metadata.namespace ?? "default", name: claim)]
            else {
                return "datavolume \"\(claim)\" does not exist"
            }
            if let bound = dataVolume.status?.nodeName, bound != node.name {
                return "datavolume \"\(claim)\" is on node \(bound) (local storage)"
            }
        }
        return nil
    }

    /// The CPU the VMI asks for.
    func cpu(of vmi: VirtualMachineInstance) -> CPURequirement {
        CPURequirement(kubeVirtModel: vmi.spec.cpuModel())
    }

    /// Memory taken per node by VMIs that have not ended; with `migrationTargets`, also on the targets of migrations
    /// that have not completed (the target reserves the guest's memory while it prepares).
    static func memoryInUse(_ instances: [VirtualMachineInstance], migrationTargets: Bool) -> [String: UInt64] {
        var used: [String: UInt64] = [:]
        for vmi in instances {
            guard let node = vmi.nodeName, vmi.status?.phase?.isFinal != true else { continue }
            used[node, default: 0] = used[node, default: 0].saturatingAdd(vmi.requestedMemory)
            if migrationTargets, let state = vmi.status?.migrationState, let target = state.targetNode,
                !state.isCompleted
            {
                used[target, default: 0] = used[target, default: 0].saturatingAdd(vmi.requestedMemory)
            }
        }
        return used
    }
}

/// Picks, among the nodes offered, the one with the most memory left (ties: by name).
struct MemoryFit {
    private(set) var best: (name: String, free: UInt64)?

    /// Takes `node` into account for `bytes` of memory, with `used` bytes per node already taken; returns why it
    /// does not fit, or nil.
    mutating func consider(_ node: Node, needing bytes: UInt64, used: [String: UInt64]) -> String? {
        let allocatable = node.allocatableMemory
        let taken = used[node.name, default: 0]
        let free = allocatable > taken ? allocatable - taken : 0
        guard free >= bytes else { return "insufficient memory (\(free >> 20) MiB free, \(bytes >> 20) MiB requested)" }
        if best == nil || free > best!.free || (free == best!.free && node.name < best!.name) {
            best = (node.name, free)
        }
        return nil
    }
}
