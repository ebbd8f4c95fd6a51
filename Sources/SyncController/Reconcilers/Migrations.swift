import ClusterAPI
import Foundation
import Hypervisor
import Logging

/// The cluster side of live migration (VirtualMachineInstanceMigration): admission of new migrations, the parallel
/// limits, choosing the target node, aborts by deletion, the finalizer, watchdogs for stuck phases, and drain
/// evacuation. The node agents do the rest: the target prepares (PreparingTarget → TargetReady), the source runs the
/// libvirt job (Running → Succeeded / Failed).
extension ClusterReconciler {
    /// The migration settings of the KubeVirt configuration object (its defaults where it is silent or absent).
    typealias MigrationSettings = KubeVirt.Migrations

    func migrations(vmis: [JSONValue], nodes: [JSONValue], readyNodes: Set<String>, dataVolumes: [JSONValue], classes: [JSONValue]) async throws(APIError) {
        let kubeVirt = try? await store.get(Kinds.kubeVirt, namespace: ClusterDefaults.namespace, name: ClusterDefaults.name)
        let settings = (kubeVirt.flatMap { try? KubeVirt(json: $0) } ?? KubeVirt()).migrations
        try await evacuate(nodes: nodes, vmis: vmis, dataVolumes: dataVolumes, classes: classes, readyNodes: readyNodes)
        let all = try await store.list(Kinds.migration, Selection()).items.sorted { Self.creationOrder($0) < Self.creationOrder($1) }
        var active = all.filter { Migration.activePhases.contains($0["status"]?["phase"]?.string ?? "") }
        for vmim in all {
          do {
            let vmi = vmis.first { namespace($0) == namespace(vmim) && name($0) == vmim["spec"]?["vmiName"]?.string }
            if vmim["metadata"]?["deletionTimestamp"] != nil {
                try await abortDeleted(vmim, phase: vmim["status"]?["phase"]?.string ?? "", vmi: vmi)
                continue
            }
            // A new migration goes as far as it can in one pass (admitted, started within the limits, target chosen):
            // each step is a write the next one needs no other pass for.
            var current = vmim
            var steps = 0
            phases: while steps < 3 {
            steps += 1
            let phase = current["status"]?["phase"]?.string ?? ""
            switch phase {
            case "":
                guard let admitted = try await admit(current, vmi: vmi, others: all) else { break phases }
                current = admitted
            case "Pending":
                let source = vmi?["status"]?["nodeName"]?.string ?? ""
                let outbound = active.filter { $0["status"]?["migrationState"]?["sourceNode"]?.string == source }.count
                guard vmi?["status"]?["phase"]?.string == "Running" else {
                    try await fail(current, vmi: vmi, reason: "VMINotRunning", "the VMI is no longer running")
                    break phases
                }
                if active.count < settings.parallelPerCluster && outbound < settings.parallelOutboundPerNode {
                    var state: JSONValue = ["sourceNode": .string(source)]
                    state["migrationUid"] = current["metadata"]?["uid"] ?? .null
                    current = try await transition(current, to: "Scheduling", ["migrationState": state])
                    active.append(current)
                } else {
                    var limits: [String] = []
                    if outbound >= settings.parallelOutboundPerNode {
                        limits.append("\(outbound) migrations leave node \(source) (parallelOutboundMigrationsPerNode \(settings.parallelOutboundPerNode))")
                    }
                    if active.count >= settings.parallelPerCluster {
                        limits.append("\(active.count) migrations run in the cluster (parallelMigrationsPerCluster \(settings.parallelPerCluster))")
                    }
                    let why = "waiting: " + limits.joined(separator: "; ")
                    try await setCondition(current, Resources.condition("Queued", true, reason: "ParallelLimit", message: why))
                    break phases
                }
            case "Scheduling":
                try await chooseTarget(current, vmi: vmi, nodes: nodes, readyNodes: readyNodes, vmis: vmis, dataVolumes: dataVolumes, classes: classes, settings: settings)
                break phases
            default:
                break phases
            }
            }
            let phase = current["status"]?["phase"]?.string ?? ""
            switch phase {
            case "Scheduled", "PreparingTarget", "TargetReady":
                let target = vmim["status"]?["migrationState"]?["targetNode"]?.string ?? ""
                if !readyNodes.contains(target) {
                    try await fail(vmim, vmi: vmi, reason: "TargetNodeNotReady", "target node \(target) is not Ready")
                } else if let since = Self.phaseSince(vmim), Date.now.timeIntervalSince(since) > settings.prepareTimeout {
                    try await fail(vmim, vmi: vmi, reason: "TargetNotReady", "target node \(target) did not get ready within \(Int(settings.prepareTimeout)) s (phase \(phase))")
                }
            case "Running":
                let source = vmim["status"]?["migrationState"]?["sourceNode"]?.string ?? ""
                if !readyNodes.contains(source) {
                    try await setCondition(vmim, Resources.condition("SourceNodeReady", false, reason: "NodeUnresponsive", message: "source node \(source) stopped posting status"))
                }
            case "Failed":
                // A failure the target recorded: the VMI's migration state says so too.
                if let vmi, vmi["status"]?["migrationState"]?["migrationUid"] == vmim["metadata"]?["uid"],
                    vmi["status"]?["migrationState"]?["failed"]?.bool != true, let state = vmim["status"]?["migrationState"]
                {
                    var changes: JSONValue = ["failed": true, "completed": true]
                    for key in ["failureReason", "endTimestamp", "abortStatus"] { if let value = state[key] { changes[key] = value } }
                    try await patchVMIMigrationState(vmi, vmim: vmim, changes)
                }
            default:
                break
            }
          } catch {
            // 409: an agent moved the migration on after this pass read it; the next pass looks again.
            guard error.code == 409 else { throw error }
          }
        }
        try await printableMigration(vmis: vmis, migrations: try await store.list(Kinds.migration, Selection()).items)
    }

    // MARK: Phases

    /// Why a migration of `vmiName` in `namespace` cannot be admitted, or nil: the VMI must exist, run, be
    /// live-migratable and have no other migration in progress (one created earlier and not admitted yet goes first).
    /// The API refuses such a create; the reconciler fails one that got in (stored directly, or the VMI changed).
    static func admissionProblem(namespace: String, vmiName: String, uid: JSONValue?, creationOrder: String?, vmi: JSONValue?, others: [JSONValue])
        -> (reason: String, message: String)?
    {
        guard let vmi else {
            return ("VMINotFound", "virtualmachineinstance \"\(vmiName)\" does not exist in namespace \(namespace)")
        }
        guard vmi["status"]?["phase"]?.string == "Running", vmi["status"]?["nodeName"]?.string != nil else {
            return ("VMINotRunning", "virtualmachineinstance \"\(vmiName)\" is not running (phase \(vmi["status"]?["phase"]?.string ?? "Pending"))")
        }
        if let condition = vmi["status"]?["conditions"]?.array?.first(where: { $0["type"] == "LiveMigratable" }), condition["status"] == "False" {
            return (condition["reason"]?.string ?? "NotMigratable",
                    "virtualmachineinstance \"\(vmiName)\" is not live-migratable: \(condition["message"]?.string ?? "")")
        }
        func blocks(_ other: JSONValue) -> Bool {
            if let uid, other["metadata"]?["uid"] == uid { return false }
            guard (other["metadata"]?["namespace"]?.string ?? "default") == namespace, other["spec"]?["vmiName"]?.string == vmiName,
                other["metadata"]?["deletionTimestamp"] == nil
            else { return false }
            let phase = other["status"]?["phase"]?.string ?? ""
            if phase == "Pending" || Migration.activePhases.contains(phase) { return true }
            guard phase.isEmpty else { return false }
            guard let creationOrder else { return true }
            return Self.creationOrder(other) < creationOrder
        }
        if let other = others.first(where: blocks) {
            return ("MigrationInProgress",
                    "virtualmachineinstance \"\(vmiName)\" already has a running or pending migration (\(other["metadata"]?["name"]?.string ?? ""))")
        }
        return nil
    }

    /// A new migration: admitted (finalizer, label, Pending) unless `admissionProblem` says why not.
    private func admit(_ vmim: JSONValue, vmi: JSONValue?, others: [JSONValue]) async throws(APIError) -> JSONValue? {
        let vmiName = vmim["spec"]?["vmiName"]?.string ?? ""
        if let problem = Self.admissionProblem(namespace: namespace(vmim), vmiName: vmiName, uid: vmim["metadata"]?["uid"],
                                               creationOrder: Self.creationOrder(vmim), vmi: vmi, others: others) {
            try await fail(vmim, vmi: nil, reason: problem.reason, problem.message)
            return nil
        }
        var finalizers = vmim["metadata"]?["finalizers"]?.array ?? []
        if !finalizers.contains(.string(Migration.finalizer)) { finalizers.append(.string(Migration.finalizer)) }
        var labels = vmim["metadata"]?["labels"] ?? [:]
        labels[Migration.vmiNameLabel] = .string(vmiName)
        let labelled = try await store.patch(Kinds.migration, namespace: namespace(vmim), name: name(vmim),
                                             mergePatch: ["metadata": ["finalizers": .array(finalizers), "labels": labels]], subresource: .main)
        let pending = try await transition(labelled, to: "Pending", [:])
        logger.info("migration admitted", metadata: ["migration": "\(namespace(vmim))/\(name(vmim))", "vmi": "\(vmiName)"])
        return pending
    }

    /// Picks the target: a Ready node other than the source that fits the VMI (selectors, affinity, taints, memory)
    /// and the `addedNodeSelector`, and can take its CPU from the source.
    private func chooseTarget(_ vmim: JSONValue, vmi: JSONValue?, nodes: [JSONValue], readyNodes: Set<String>, vmis: [JSONValue],
                              dataVolumes: [JSONValue], classes: [JSONValue], settings: MigrationSettings) async throws(APIError)
    {
        guard let vmi, let source = vmi["status"]?["nodeName"]?.string, vmi["status"]?["phase"]?.string == "Running" else {
            return try await fail(vmim, vmi: vmi, reason: "VMINotRunning", "the VMI is no longer running")
        }
        let sourceLabels = nodes.first { name($0) == source }?["metadata"]?["labels"]?.stringMap ?? [:]
        var used: [String: UInt64] = [:]
        for other in vmis {
            guard let node = other["status"]?["nodeName"]?.string, !["Succeeded", "Failed"].contains(other["status"]?["phase"]?.string ?? "") else { continue }
            used[node, default: 0] = used[node, default: 0].saturatingAdd(memory(other))
            if let target = other["status"]?["migrationState"]?["targetNode"]?.string, other["status"]?["migrationState"]?["completed"]?.bool != true {
                used[target, default: 0] = used[target, default: 0].saturatingAdd(memory(other))
            }
        }
        let cpu = DomainSpec.CPUMode(kubeVirtModel: Resources.cpuModel(of: vmi["spec"]))
        var reasons: [String] = []
        var fit = MemoryFit()
        for node in nodes {
            let nodeName = name(node)
            let labels = node["metadata"]?["labels"]?.stringMap ?? [:]
            if nodeName == source { continue }
            if let reason = unfit(vmi, on: node, readyNodes: readyNodes, dataVolumes: dataVolumes, classes: classes, checkVolumes: false) {
                reasons.append("\(nodeName): \(reason)")
                continue
            }
            if let (key, value) = (vmim["spec"]?["addedNodeSelector"]?.stringMap ?? [:]).first(where: { labels[$0.key] != $0.value }) {
                reasons.append("\(nodeName): node does not match addedNodeSelector \(key)=\(value)")
                continue
            }
            if let reason = cpu.unsatisfied(toMigrateFrom: sourceLabels, to: labels) {
                reasons.append("\(nodeName): \(reason)")
                continue
            }
            if node["status"]?["tunnelEndpoint"]?.string == nil {
                reasons.append("\(nodeName): its node agent publishes no tunnel endpoint for migrations")
                continue
            }
            if let reason = fit.consider(node, needing: memory(vmi), used: used) { reasons.append("\(nodeName): \(reason)") }
        }
        guard let best = fit.best else {
            let message = "no node can take the VMI: " + (reasons.isEmpty ? "the cluster has no other node" : reasons.sorted().joined(separator: "; "))
            if let since = Self.phaseSince(vmim), Date.now.timeIntervalSince(since) > settings.unschedulableTimeout {
                return try await fail(vmim, vmi: vmi, reason: "Unschedulable", message)
            }
            return try await setCondition(vmim, Resources.condition("TargetScheduled", false, reason: "Unschedulable", message: message))
        }
        var state = vmim["status"]?["migrationState"] ?? [:]
        state["sourceNode"] = .string(source)
        state["targetNode"] = .string(best.name)
        state["migrationUid"] = vmim["metadata"]?["uid"] ?? .null
        state["mode"] = "PreCopy"
        var conditions = Resources.setting(Resources.condition("TargetScheduled", true, reason: "Scheduled", message: "target node \(best.name)"),
                                           in: vmim["status"]?["conditions"]) ?? vmim["status"]?["conditions"] ?? []
        conditions = Resources.setting(Resources.condition("Queued", false, reason: "Admitted"), in: conditions) ?? conditions
        try await transition(vmim, to: "Scheduled", ["migrationState": state, "conditions": conditions])
        try await patchVMIMigrationState(vmi, vmim: vmim, [
            "migrationUid": vmim["metadata"]?["uid"] ?? .null, "migrationUID": vmim["metadata"]?["uid"] ?? .null,
            "sourceNode": .string(source), "targetNode": .string(best.name), "mode": "PreCopy",
            "completed": false, "failed": false, "abortRequested": false,
            "startTimestamp": .null, "endTimestamp": .null, "abortStatus": .null, "failureReason": .null,
            "migrationConfiguration": .null, "progress": .null,
        ])
        logger.info("migration scheduled", metadata: ["migration": "\(namespace(vmim))/\(name(vmim))", "source": "\(source)", "target": "\(best.name)"])
    }

    /// A deleted migration that has not finished is aborted: before the job runs it simply fails; while it runs the
    /// source agent is asked (the VMI's `migrationState.abortRequested`). A finished one loses its finalizer.
    private func abortDeleted(_ vmim: JSONValue, phase: String, vmi: JSONValue?) async throws(APIError) {
        switch phase {
        case "Succeeded", "Failed":
            let finalizers = (vmim["metadata"]?["finalizers"]?.array ?? []).filter { $0 != .string(Migration.finalizer) }
            if finalizers.count != vmim["metadata"]?["finalizers"]?.array?.count {
                _ = try? await store.patch(Kinds.migration, namespace: namespace(vmim), name: name(vmim),
                                           mergePatch: ["metadata": ["finalizers": .array(finalizers)]], subresource: .main)
            }
        case "Running":
            guard vmi?["status"]?["migrationState"]?["migrationUid"] == vmim["metadata"]?["uid"] else { return }
            if vmi?["status"]?["migrationState"]?["abortRequested"]?.bool != true, let vmi {
                try await patchVMIMigrationState(vmi, vmim: vmim, ["abortRequested": true])
                logger.info("migration abort requested", metadata: ["migration": "\(namespace(vmim))/\(name(vmim))"])
            }
        default:
            try await fail(vmim, vmi: vmi, reason: "Aborted", "the migration was deleted before it started (phase \(phase.isEmpty ? "new" : phase))", abortStatus: "Succeeded")
        }
    }

    // MARK: Writing

    /// Moves the migration to `phase`, recording when — only if nobody changed it since it was read (an agent may
    /// have moved it on meanwhile; the next pass looks again).
    @discardableResult
    func transition(_ vmim: JSONValue, to phase: String, _ changes: JSONValue) async throws(APIError) -> JSONValue {
        let patch = Migration.transitionPatch(vmim, to: phase, changes)
        return try await store.patch(Kinds.migration, namespace: namespace(vmim), name: name(vmim), mergePatch: patch, subresource: .status)
    }

    /// Fails the migration with a reason; the VMI's migration state (if this migration owns it) says so too.
    func fail(_ vmim: JSONValue, vmi: JSONValue?, reason: String, _ message: String, abortStatus: String? = nil) async throws(APIError) {
        var state = vmim["status"]?["migrationState"] ?? [:]
        state["failed"] = true
        state["completed"] = true
        state["failureReason"] = .string(message)
        state["endTimestamp"] = .string(Migration.timestamp())
        if let abortStatus { state["abortStatus"] = .string(abortStatus) }
        let conditions = Resources.setting(Resources.condition("Failed", true, reason: reason, message: message), in: vmim["status"]?["conditions"]) ?? vmim["status"]?["conditions"] ?? []
        try await transition(vmim, to: "Failed", ["migrationState": state, "conditions": conditions])
        if let vmi, vmi["status"]?["migrationState"]?["migrationUid"] == vmim["metadata"]?["uid"], vmim["metadata"]?["uid"] != nil {
            var changes: JSONValue = ["failed": true, "completed": true, "failureReason": .string(message), "endTimestamp": state["endTimestamp"] ?? .null]
            if let abortStatus { changes["abortStatus"] = .string(abortStatus) }
            try await patchVMIMigrationState(vmi, vmim: vmim, changes)
        }
        logger.notice("migration failed", metadata: ["migration": "\(namespace(vmim))/\(name(vmim))", "reason": "\(reason)", "message": "\(message)"])
    }

    private func setCondition(_ vmim: JSONValue, _ condition: JSONValue) async throws(APIError) {
        guard let conditions = Resources.setting(condition, in: vmim["status"]?["conditions"]) else { return }
        _ = try await store.patch(Kinds.migration, namespace: namespace(vmim), name: name(vmim), mergePatch: ["status": ["conditions": conditions]], subresource: .status)
    }

    func patchVMIMigrationState(_ vmi: JSONValue, vmim: JSONValue, _ changes: JSONValue) async throws(APIError) {
        _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi),
                                  mergePatch: ["status": ["migrationState": changes]], subresource: .status)
    }

    /// The VMI column `syncctl get vmi` shows: "Pending migration" while a migration waits, "Migrating" while one
    /// runs, empty otherwise.
    private func printableMigration(vmis: [JSONValue], migrations: [JSONValue]) async throws(APIError) {
        for vmi in vmis {
            let mine = migrations.filter { namespace($0) == namespace(vmi) && $0["spec"]?["vmiName"]?.string == name(vmi) }
            let phases = Set(mine.compactMap { $0["status"]?["phase"]?.string })
            let text: JSONValue =
                phases.contains("Running") || phases.contains("TargetReady") || phases.contains("PreparingTarget") || phases.contains("Scheduled")
                ? "Migrating" : (phases.contains("Pending") || phases.contains("Scheduling") ? "Pending migration" : .null)
            guard vmi["status"]?["printableMigration"] ?? .null != text else { continue }
            _ = try? await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi),
                                       mergePatch: ["status": ["printableMigration": text]], subresource: .status)
        }
    }

    // MARK: Helpers

    /// Oldest first (creation time, then name), the order in which waiting migrations start.
    static func creationOrder(_ object: JSONValue) -> String {
        (object["metadata"]?["creationTimestamp"]?.string ?? "") + "/" + (object["metadata"]?["name"]?.string ?? "")
    }

    /// When the migration entered its current phase.
    static func phaseSince(_ vmim: JSONValue) -> Date? {
        guard let text = vmim["status"]?["phaseTransitionTimestamps"]?.array?.last?["phaseTransitionTimestamp"]?.string else { return nil }
        return Migration.parseTimestamp(text)
    }

    // MARK: Drain

    /// Seed 000's batch migration: a node tainted `kubevirt.io/drain=draining:NoSchedule` gets an evacuation migration
    /// for every live-migratable VMI on it (queued behind the parallel limits like any other); VMIs that cannot
    /// migrate are reported, not killed; the node's `Drained` condition says how far it is, and True once every
    /// migratable VMI has left or its migration has finished (a failed one is not retried within the drain).
    func evacuate(nodes: [JSONValue], vmis: [JSONValue], dataVolumes: [JSONValue], classes: [JSONValue], readyNodes: Set<String>) async throws(APIError) {
        let migrations = try await store.list(Kinds.migration, Selection()).items
        for node in nodes {
            let nodeName = name(node)
            let draining = (node["spec"]?["taints"]?.array ?? []).contains {
                $0["key"]?.string == Resources.drainTaintKey && ["NoSchedule", "NoExecute"].contains($0["effect"]?.string ?? "")
            }
            let hasCondition = node["status"]?["conditions"]?.array?.contains { $0["type"]?.string == Migration.drainCondition } ?? false
            guard draining else {
                if hasCondition {
                    let remaining = (node["status"]?["conditions"]?.array ?? []).filter { $0["type"]?.string != Migration.drainCondition }
                    _ = try await store.patch(Kinds.node, namespace: nil, name: nodeName, mergePatch: ["status": ["conditions": .array(remaining)]], subresource: .status)
                }
                continue
            }
            let drainStarted = node["status"]?["conditions"]?.array?.first { $0["type"]?.string == Migration.drainCondition }?["drainStarted"]?.string
                ?? Migration.timestamp()
            var migrating: [String] = [], waiting: [String] = [], failed: [String] = [], blocked: [String] = []
            for vmi in vmis where vmi["status"]?["nodeName"]?.string == nodeName && vmi["status"]?["phase"]?.string == "Running"
                && vmi["metadata"]?["deletionTimestamp"] == nil
            {
                let label = "\(namespace(vmi))/\(name(vmi))"
                let condition = vmi["status"]?["conditions"]?.array?.first { $0["type"]?.string == "LiveMigratable" }
                if condition?["status"]?.string != "True" {
                    blocked.append("\(label) (\(condition?["message"]?.string ?? "live-migratability not known yet"))")
                    continue
                }
                let mine = migrations.filter { namespace($0) == namespace(vmi) && $0["spec"]?["vmiName"]?.string == name(vmi) }
                if let open = mine.first(where: { !Migration.finalPhases.contains($0["status"]?["phase"]?.string ?? "") }) {
                    (Migration.activePhases.contains(open["status"]?["phase"]?.string ?? "") ? { migrating.append(label) } : { waiting.append(label) })()
                    continue
                }
                if mine.contains(where: {
                    $0["metadata"]?["labels"]?[Migration.evacuationNodeLabel]?.string == nodeName && $0["status"]?["phase"]?.string == "Failed"
                        && ($0["metadata"]?["creationTimestamp"]?.string ?? "") >= String(drainStarted.prefix(19))
                }) {
                    failed.append(label)
                    continue
                }
                let vmim: JSONValue = [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                    "metadata": [
                        "name": .string(Migration.generatedName(Migration.evacuationPrefix)), "namespace": .string(namespace(vmi)),
                        "labels": [.init(stringLiteral: Migration.evacuationNodeLabel): .string(nodeName), .init(stringLiteral: Migration.vmiNameLabel): .string(name(vmi))],
                    ],
                    "spec": ["vmiName": .string(name(vmi))],
                ]
                _ = try await store.create(Kinds.migration, vmim)
                if vmi["status"]?["evacuationNodeName"]?.string != nodeName {
                    _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi),
                                              mergePatch: ["status": ["evacuationNodeName": .string(nodeName)]], subresource: .status)
                }
                waiting.append(label)
                logger.info("evacuation migration created", metadata: ["node": "\(nodeName)", "vmi": "\(label)"])
            }
            let done = migrating.isEmpty && waiting.isEmpty
            var parts: [String] = []
            if !migrating.isEmpty { parts.append("\(migrating.count) migrating (\(migrating.sorted().joined(separator: ", ")))") }
            if !waiting.isEmpty { parts.append("\(waiting.count) waiting (\(waiting.sorted().joined(separator: ", ")))") }
            if !failed.isEmpty { parts.append("\(failed.count) failed to migrate (\(failed.sorted().joined(separator: ", ")))") }
            if !blocked.isEmpty { parts.append("\(blocked.count) not live-migratable, left running: \(blocked.sorted().joined(separator: "; "))") }
            let message = parts.isEmpty ? "no VMI left to migrate" : parts.joined(separator: "; ")
            let reason = done ? (failed.isEmpty && blocked.isEmpty ? "DrainComplete" : "DrainCompleteWithRemainingVMIs") : "Draining"
            var condition = Resources.condition(Migration.drainCondition, done, reason: reason, message: message)
            condition["drainStarted"] = .string(drainStarted)
            let existing = node["status"]?["conditions"]?.array?.first { $0["type"]?.string == Migration.drainCondition }
            if existing?["status"] != condition["status"] || existing?["reason"] != condition["reason"] || existing?["message"] != condition["message"] {
                if let existing, existing["status"] == condition["status"] { condition["lastTransitionTime"] = existing["lastTransitionTime"] ?? .null }
                _ = try await store.patch(Kinds.node, namespace: nil, name: nodeName, mergePatch: ["status": ["conditions": [condition]]], subresource: .status)
            }
        }
    }
}
