import ClusterAPI
import Foundation
import Hypervisor
import Logging

/// Placing pending VMIs on nodes and the LiveMigratable condition.
extension ClusterReconciler {
    /// Why `vmi` cannot run on `node` (nil: it can). Capacity is checked separately.
    func unfit(_ vmi: JSONValue, on node: JSONValue, readyNodes: Set<String>, dataVolumes: [JSONValue], classes: [JSONValue],
               ignoreReadiness: Bool = false, checkVolumes: Bool = true) -> String?
    {
        let nodeName = node["metadata"]?["name"]?.string ?? ""
        let labels = node["metadata"]?["labels"]?.stringMap ?? [:]
        let spec = vmi["spec"]
        if !ignoreReadiness {
            if !readyNodes.contains(nodeName) { return "node is not Ready" }
            if node["spec"]?["unschedulable"]?.bool == true { return "node is cordoned (unschedulable)" }
            let tolerations = spec?["tolerations"]?.array ?? []
            for taint in node["spec"]?["taints"]?.array ?? [] where ["NoSchedule", "NoExecute"].contains(taint["effect"]?.string ?? "") {
                let tolerated = tolerations.contains { toleration in
                    let keyMatches = toleration["key"] == nil || toleration["key"] == taint["key"]
                    let valueMatches = toleration["operator"]?.string == "Exists" || toleration["value"] == taint["value"] || taint["value"] == nil
                    let effectMatches = toleration["effect"] == nil || toleration["effect"] == taint["effect"]
                    return keyMatches && valueMatches && effectMatches
                }
                if !tolerated { return "node has taint \(taint["key"]?.string ?? "")=\(taint["value"]?.string ?? ""):\(taint["effect"]?.string ?? "") the VMI does not tolerate" }
            }
        }
        for (key, value) in spec?["nodeSelector"]?.stringMap ?? [:] where labels[key] != value {
            return "node does not match nodeSelector \(key)=\(value)"
        }
        if let terms = spec?["affinity"]?["nodeAffinity"]?["requiredDuringSchedulingIgnoredDuringExecution"]?["nodeSelectorTerms"]?.array, !terms.isEmpty {
            let matches = terms.contains { term in
                (term["matchExpressions"]?.array ?? []).allSatisfy { expression in
                    let key = expression["key"]?.string ?? ""
                    let values = (expression["values"]?.array ?? []).compactMap(\.string)
                    switch expression["operator"]?.string {
                    case "In": return labels[key].map(values.contains) ?? false
                    case "NotIn": return !(labels[key].map(values.contains) ?? false)
                    case "Exists": return labels[key] != nil
                    case "DoesNotExist": return labels[key] == nil
                    default: return false
                    }
                }
            }
            if !matches { return "node does not match the VMI's required node affinity" }
        }
        let cpu = DomainSpec.CPUMode(kubeVirtModel: Resources.cpuModel(of: spec))
        if let reason = cpu.unsatisfied(toRunOn: labels) { return reason }
        // A local (non-shared) DataVolume already written on one node binds the VMI there.
        for volume in spec?["volumes"]?.array ?? [] where checkVolumes {
            guard let claim = volume["dataVolume"]?["name"]?.string ?? volume["persistentVolumeClaim"]?["claimName"]?.string else { continue }
            let dataVolume = dataVolumes.first { $0["metadata"]?["name"]?.string == claim && $0["metadata"]?["namespace"] == vmi["metadata"]?["namespace"] }
            guard let dataVolume else { return "datavolume \"\(claim)\" does not exist" }
            if let bound = dataVolume["status"]?["nodeName"]?.string, bound != nodeName {
                return "datavolume \"\(claim)\" is on node \(bound) (local storage)"
            }
        }
        return nil
    }

    /// Memory a VMI asks for, in bytes (`Resources.requestedMemory`).
    func memory(_ vmi: JSONValue) -> UInt64 {
        let domain = vmi["spec"]?["domain"]
        return Resources.requestedMemory(guest: domain?["memory"]?["guest"], request: domain?["resources"]?["requests"]?["memory"])
    }

    func schedule(_ vmis: [JSONValue], nodes: [JSONValue], readyNodes: Set<String>, dataVolumes: [JSONValue], classes: [JSONValue]) async throws(APIError) {
        var used: [String: UInt64] = [:]
        for vmi in vmis {
            guard let node = vmi["status"]?["nodeName"]?.string, !["Succeeded", "Failed"].contains(vmi["status"]?["phase"]?.string ?? "") else { continue }
            used[node, default: 0] = used[node, default: 0].saturatingAdd(memory(vmi))
        }
        for vmi in vmis where vmi["metadata"]?["deletionTimestamp"] == nil && vmi["status"]?["nodeName"] == nil
            && ["Pending", nil].contains(vmi["status"]?["phase"]?.string)
        {
            var reasons: [String] = []
            var fit = MemoryFit()
            for node in nodes {
                let nodeName = node["metadata"]?["name"]?.string ?? ""
                if let reason = unfit(vmi, on: node, readyNodes: readyNodes, dataVolumes: dataVolumes, classes: classes) {
                    reasons.append("\(nodeName): \(reason)")
                    continue
                }
                if let reason = fit.consider(node, needing: memory(vmi), used: used) { reasons.append("\(nodeName): \(reason)") }
            }
            let best = fit.best
            if let best {
                var status = vmi["status"] ?? [:]
                status["phase"] = "Scheduled"
                status["nodeName"] = .string(best.name)
                status["conditions"] = Resources.setting(Resources.condition("PodScheduled", true, reason: "Scheduled", message: "placed on node \(best.name)"), in: status["conditions"]) ?? status["conditions"]
                _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi), mergePatch: ["status": status], subresource: .status)
                used[best.name, default: 0] = used[best.name, default: 0].saturatingAdd(memory(vmi))
                logger.info("VMI scheduled", metadata: ["vmi": "\(namespace(vmi))/\(name(vmi))", "node": "\(best.name)"])
            } else {
                let message = "0/\(nodes.count) nodes are available" + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; "))
                if let conditions = Resources.setting(Resources.condition("PodScheduled", false, reason: "Unschedulable", message: message), in: vmi["status"]?["conditions"]) {
                    _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi), mergePatch: ["status": ["conditions": conditions, "phase": "Pending"]], subresource: .status)
                }
            }
        }
    }

    /// The LiveMigratable condition, with the seed's reasons when False.
    func liveMigratable(_ vmis: [JSONValue], nodes: [JSONValue], readyNodes: Set<String>, dataVolumes: [JSONValue], classes: [JSONValue]) async throws(APIError) {
        for vmi in vmis where vmi["metadata"]?["deletionTimestamp"] == nil && !["Succeeded", "Failed"].contains(vmi["status"]?["phase"]?.string ?? "") {
            let (migratable, reason, message) = migratability(vmi, nodes: nodes, readyNodes: readyNodes, dataVolumes: dataVolumes, classes: classes)
            guard let conditions = Resources.setting(Resources.condition("LiveMigratable", migratable, reason: reason, message: message), in: vmi["status"]?["conditions"]) else { continue }
            _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi), mergePatch: ["status": ["conditions": conditions]], subresource: .status)
        }
    }

    func migratability(_ vmi: JSONValue, nodes: [JSONValue], readyNodes: Set<String>, dataVolumes: [JSONValue], classes: [JSONValue]) -> (Bool, String, String) {
        let spec = vmi["spec"]
        for disk in spec?["domain"]?["devices"]?["disks"]?.array ?? [] where disk["cdrom"] != nil {
            return (false, "DisksNotLiveMigratable", "disk \"\(disk["name"]?.string ?? "")\" is a CD-ROM")
        }
        for volume in spec?["volumes"]?.array ?? [] {
            if volume["containerDisk"] != nil { return (false, "DisksNotLiveMigratable", "volume \"\(volume["name"]?.string ?? "")\" is a container disk") }
            guard let claim = volume["dataVolume"]?["name"]?.string ?? volume["persistentVolumeClaim"]?["claimName"]?.string,
                let dataVolume = dataVolumes.first(where: { $0["metadata"]?["name"]?.string == claim && $0["metadata"]?["namespace"] == vmi["metadata"]?["namespace"] })
            else { continue }
            let storage = dataVolume["spec"]?["storage"] ?? dataVolume["spec"]?["pvc"]
            let className = storage?["storageClassName"]?.string
            let storageClass = classes.first { $0["metadata"]?["name"]?.string == className }
                ?? classes.first { $0["metadata"]?["annotations"]?[Resources.defaultClassAnnotation]?.string == "true" }
            let shared = storageClass?["shared"]?.bool ?? false
            let modes = (storage?["accessModes"]?.array ?? []).compactMap(\.string)
            if !shared && modes.contains("ReadWriteOnce") {
                return (false, "DisksNotLiveMigratable", "volume \"\(volume["name"]?.string ?? "")\" is ReadWriteOnce on storage class \"\(storageClass?["metadata"]?["name"]?.string ?? "?")\", which is not shared")
            }
        }
        if !(spec?["domain"]?["devices"]?["hostDevices"]?.array ?? []).isEmpty || !(spec?["domain"]?["devices"]?["gpus"]?.array ?? []).isEmpty {
            return (false, "HostDeviceNotLiveMigratable", "the VMI passes host devices (PCI or vGPU) through")
        }
        if let hostname = spec?["nodeSelector"]?[Resources.hostnameLabel]?.string {
            return (false, "NodeSelectorBindsOneNode", "nodeSelector \(Resources.hostnameLabel)=\(hostname) binds the VMI to one node")
        }
        let fitting = nodes.filter { unfit(vmi, on: $0, readyNodes: readyNodes, dataVolumes: [], classes: classes, ignoreReadiness: true, checkVolumes: false) == nil }
        if fitting.count <= 1 && nodes.count > 1 {
            let which = fitting.first?["metadata"]?["name"]?.string ?? "no node"
            return (false, "SchedulingRulesMatchOneNode", "the VMI's scheduling rules (nodeSelector, affinity, CPU model) match only \(which)")
        }
        return (true, "Migratable", "")
    }
}

/// Picks, among the nodes offered, the one with the most memory left (ties: by name).
struct MemoryFit {
    private(set) var best: (name: String, free: UInt64)?

    /// Takes `node` into account for `bytes` of memory, with `used` bytes per node already taken; returns why it
    /// does not fit, or nil.
    mutating func consider(_ node: JSONValue, needing bytes: UInt64, used: [String: UInt64]) -> String? {
        let name = node["metadata"]?["name"]?.string ?? ""
        let allocatable = Quantity(node["status"]?["allocatable"]?["memory"])?.bytes ?? 0
        let free = allocatable > used[name, default: 0] ? allocatable - used[name, default: 0] : 0
        guard free >= bytes else { return "insufficient memory (\(free >> 20) MiB free, \(bytes >> 20) MiB requested)" }
        if best == nil || free > best!.free || (free == best!.free && name < best!.name) { best = (name, free) }
        return nil
    }
}
