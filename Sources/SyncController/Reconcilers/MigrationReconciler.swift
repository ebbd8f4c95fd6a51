public import ClusterAPI
public import ControllerRuntime
import Foundation
import Logging

/// The cluster side of live migration, keyed by VirtualMachineInstanceMigration: admission, the parallel limits
/// (oldest first), choosing the target node, aborts by deletion and the finalizer, and deadlines for stuck phases.
/// The node agents do the rest: the target prepares (PreparingTarget → TargetReady), the source runs the libvirt job
/// (Running → Succeeded / Failed).
public struct MigrationReconciler: Reconciler {
    public let name = "migration"
    let store: any ResourceStore
    let migrations: Cache<VirtualMachineInstanceMigration>
    let instances: Cache<VirtualMachineInstance>
    let nodes: Cache<Node>
    let configuration: Cache<KubeVirt>
    let placement: Placement
    let logger: Logger

    typealias Phase = VirtualMachineInstanceMigration.Phase

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        // Decentralized migrations are `DecentralizedMigrationReconciler`'s.
        guard let vmim = migrations[key], !vmim.isDecentralized else { return .done }
        let vmi = instances[ObjectKey(namespace: key.namespace, name: vmim.spec.vmiName)]
        do {
            return try await advance(vmim, vmi: vmi)
        } catch {
            // Somebody (an agent) moved the migration on since the cache saw it; that change brings the key back.
            guard error.code == 409 else { throw error }
            logger.debug("migration changed meanwhile", metadata: ["migration": "\(key)"])
            return .done
        }
    }

    /// Takes the migration as far as it can go now.
    private func advance(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?) async throws(APIError)
        -> ReconcileResult
    {
        if vmim.metadata.isDeleting {
            try await abortDeleted(vmim, vmi: vmi)
            return .done
        }
        // A new migration goes as far as it can at once (admitted, started within the limits, target chosen): each
        // step is a write the next one needs nothing else for.
        var current = vmim
        for _ in 0..<3 {
            switch current.phase {
            case .new:
                guard let admitted = try await admit(current, vmi: vmi) else { return .done }
                current = admitted
            case .pending:
                guard let started = try await start(current, vmi: vmi) else { return .done }
                current = started
            case .scheduling:
                return try await chooseTarget(current, vmi: vmi)
            default:
                return try await supervise(current, vmi: vmi)
            }
        }
        return try await supervise(current, vmi: vmi)
    }

    /// The migration settings as the store holds them now (the cache's when the store cannot be read).
    private func currentMigrationSettings() async -> KubeVirt.Migrations {
        let key = ObjectKey(namespace: KubeVirt.namespace, name: KubeVirt.name)
        guard let stored = try? await store.get(Kinds.kubeVirt, namespace: key.namespace, name: key.name),
            let fresh = try? KubeVirt(json: stored)
        else { return settings }
        return fresh.migrations
    }

    private var settings: KubeVirt.Migrations {
        (configuration[ObjectKey(namespace: KubeVirt.namespace, name: KubeVirt.name)] ?? KubeVirt()).migrations
    }

    // MARK: Phases

    /// Why a migration of `vmiName` in `namespace` cannot be admitted, or nil: the VMI must exist, run, be
    /// live-migratable and have no other migration in progress (one created earlier and not admitted yet goes first).
    /// The API refuses such a create; the reconciler fails one that got in (stored directly, or the VMI changed).
    /// A decentralized source copies every disk to the target's own volumes and leaves the cluster, so neither
    /// unshared ReadWriteOnce disks nor rules that match one node of this cluster keep it from migrating.
    static func admissionProblem(
        namespace: String, vmiName: String, uid: String?, creationOrder: String?, vmi: VirtualMachineInstance?,
        others: [VirtualMachineInstanceMigration], decentralized: Bool = false
    ) -> (reason: String, message: String)? {
        guard let vmi else {
            return ("VMINotFound", "virtualmachineinstance \"\(vmiName)\" does not exist in namespace \(namespace)")
        }
        guard vmi.status?.phase == .running, vmi.nodeName != nil else {
            return (
                "VMINotRunning", "virtualmachineinstance \"\(vmiName)\" is not running (phase \(vmi.phase.rawValue))"
            )
        }
        if let condition = vmi.status?.conditions["LiveMigratable"], condition.status == .false,
            !(decentralized && Self.decentralizedMayIgnore(condition))
        {
            return (
                condition.reason ?? "NotMigratable",
                "virtualmachineinstance \"\(vmiName)\" is not live-migratable: \(condition.message ?? "")"
            )
        }
        func blocks(_ other: VirtualMachineInstanceMigration) -> Bool {
            if let uid, other.metadata.uid == uid { return false }
            guard (other.metadata.namespace ?? "default") == namespace, other.spec.vmiName == vmiName,
                !other.metadata.isDeleting
            else { return false }
            if other.phase == .pending || other.phase.isActive { return true }
            guard other.phase == .new else { return false }
            guard let creationOrder else { return true }
            return other.creationOrder < creationOrder
        }
        if let other = others.first(where: blocks) {
            return (
                "MigrationInProgress",
                "virtualmachineinstance \"\(vmiName)\" already has a running or pending migration (\(other.metadata.name ?? ""))"
            )
        }
        return nil
    }

    /// What keeps a VMI in this cluster but not from moving to another one with its disks copied.
    static func decentralizedMayIgnore(_ condition: Condition) -> Bool {
        switch condition.reason {
        case "SchedulingRulesMatchOneNode", "NodeSelectorBindsOneNode": true
        case "DisksNotLiveMigratable": condition.message?.contains("ReadWriteOnce") ?? false
        default: false
        }
    }

    /// A new migration: admitted (finalizer, label, Pending) unless `admissionProblem` says why not.
    private func admit(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?) async throws(APIError)
        -> VirtualMachineInstanceMigration?
    {
        let others = migrations.objects(in: ClusterControllers.Index.vmi, ClusterControllers.vmiIndexValue(of: vmim))
        if let problem = Self.admissionProblem(
            namespace: vmim.key.namespace ?? "default", vmiName: vmim.spec.vmiName, uid: vmim.metadata.uid,
            creationOrder: vmim.creationOrder, vmi: vmi, others: others)
        {
            try await fail(vmim, vmi: nil, reason: problem.reason, problem.message)
            return nil
        }
        var admitted = vmim
        admitted.metadata.add(finalizer: Migration.finalizer)
        admitted.metadata.labels = (admitted.metadata.labels ?? [:]).merging([Migration.vmiNameLabel: vmim.spec.vmiName]
        ) { $1 }
        admitted.transition(to: .pending)
        let stored = try await store.write(admitted, from: vmim, guarded: true, cache: migrations)
        logger.info("migration admitted", metadata: ["migration": "\(vmim.key)", "vmi": "\(vmim.spec.vmiName)"])
        return stored
    }

    /// A pending migration starts (Scheduling) when the cluster's and its source node's limits leave room after the
    /// older pending migrations; otherwise its `Queued` condition says what it waits for.
    private func start(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?) async throws(APIError)
        -> VirtualMachineInstanceMigration?
    {
        guard let vmi, vmi.status?.phase == .running, let source = vmi.nodeName else {
            try await fail(vmim, vmi: vmi, reason: "VMINotRunning", "the VMI is no longer running")
            return nil
        }
        let settings = settings
        let active = Phase.allCases.filter(\.isActive).flatMap {
            migrations.objects(in: ClusterControllers.Index.phase, $0.rawValue)
        }
        var outbound: [String: Int] = [:]
        for other in active { outbound[other.status?.migrationState?.sourceNode ?? "", default: 0] += 1 }
        var running = active.count
        let blocked =
            running >= settings.parallelPerCluster || outbound[source, default: 0] >= settings.parallelOutboundPerNode
        // Older pending migrations go first: the room they would take is not this one's.
        var behindOlder = false
        if !blocked {
            // Pending ones, and new ones not admitted yet that will be.
            let older = [Phase.pending, .new].flatMap {
                migrations.objects(in: ClusterControllers.Index.phase, $0.rawValue)
            }
            .filter { $0.key != vmim.key && !$0.metadata.isDeleting && $0.creationOrder < vmim.creationOrder }
            .sorted { $0.creationOrder < $1.creationOrder }
            for other in older {
                let otherVMI = instances[ObjectKey(namespace: other.key.namespace, name: other.spec.vmiName)]
                if other.phase == .new {
                    let siblings = migrations.objects(
                        in: ClusterControllers.Index.vmi, ClusterControllers.vmiIndexValue(of: other))
                    guard
                        Self.admissionProblem(
                            namespace: other.key.namespace ?? "default", vmiName: other.spec.vmiName,
                            uid: other.metadata.uid,
                            creationOrder: other.creationOrder, vmi: otherVMI, others: siblings) == nil
                    else { continue }
                }
                guard let otherVMI, otherVMI.status?.phase == .running, let otherSource = otherVMI.nodeName else {
                    continue
                }
                if running < settings.parallelPerCluster
                    && outbound[otherSource, default: 0] < settings.parallelOutboundPerNode
                {
                    running += 1
                    outbound[otherSource, default: 0] += 1
                }
            }
            behindOlder =
                running >= settings.parallelPerCluster
                || outbound[source, default: 0] >= settings.parallelOutboundPerNode
        }
        guard blocked || behindOlder else {
            var started = vmim
            var state = vmim.status?.migrationState ?? MigrationState()
            state.sourceNode = source
            state.migrationUid = vmim.metadata.uid
            started.transition(to: .scheduling)
            started.status?.migrationState = state
            return try await store.write(started, from: vmim, guarded: true, cache: migrations)
        }
        var limits: [String] = []
        let leaving = active.filter { $0.status?.migrationState?.sourceNode == source }.count
        if leaving >= settings.parallelOutboundPerNode {
            limits.append(
                "\(leaving) migrations leave node \(source) (parallelOutboundMigrationsPerNode \(settings.parallelOutboundPerNode))"
            )
        }
        if active.count >= settings.parallelPerCluster {
            limits.append(
                "\(active.count) migrations run in the cluster (parallelMigrationsPerCluster \(settings.parallelPerCluster))"
            )
        }
        if limits.isEmpty { limits.append("older pending migrations take the free places") }
        var queued = vmim
        queued.status?.conditions.set(
            Condition("Queued", true, reason: "ParallelLimit", message: "waiting: " + limits.joined(separator: "; ")))
        try await store.write(queued, from: vmim, cache: migrations)
        return nil
    }

    /// Picks the target: a Ready node other than the source that fits the VMI (selectors, affinity, taints, memory)
    /// and the `addedNodeSelector`, can take its CPU from the source, and publishes a tunnel endpoint. Without one the
    /// migration waits (its `TargetScheduled` condition says why) until the unschedulable timeout fails it.
    private func chooseTarget(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?)
        async throws(APIError) -> ReconcileResult
    {
        guard let vmi, let source = vmi.nodeName, vmi.status?.phase == .running else {
            try await fail(vmim, vmi: vmi, reason: "VMINotRunning", "the VMI is no longer running")
            return .done
        }
        let settings = settings
        let sourceLabels = nodes[ObjectKey(namespace: nil, name: source)]?.labels ?? [:]
        let used = Placement.memoryInUse(instances.unordered, migrationTargets: true)
        let cpu = placement.cpu(of: vmi)
        var reasons: [String] = []
        var fit = MemoryFit()
        for node in nodes.all where node.name != source {
            if let reason = targetProblem(node, vmi: vmi, vmim: vmim, cpu: cpu, sourceLabels: sourceLabels)
                ?? fit.consider(node, needing: vmi.requestedMemory, used: used)
            {
                reasons.append("\(node.name): \(reason)")
            }
        }
        guard let best = fit.best else {
            let message =
                "no node can take the VMI: "
                + (reasons.isEmpty ? "the cluster has no other node" : reasons.sorted().joined(separator: "; "))
            let waited = vmim.phaseSince.map { Date.now.timeIntervalSince($0) } ?? 0
            if waited > settings.unschedulableTimeout {
                try await fail(vmim, vmi: vmi, reason: "Unschedulable", message)
                return .done
            }
            var waiting = vmim
            waiting.status?.conditions.set(
                Condition("TargetScheduled", false, reason: "Unschedulable", message: message))
            try await store.write(waiting, from: vmim, cache: migrations)
            return .requeue(after: .milliseconds(Int64((settings.unschedulableTimeout - waited) * 1000) + 100))
        }
        // The migration runs with the configuration in force now, read from the store rather than the cache (a
        // setting written just before the migration was created must apply to it): stamped on the migration's and the
        // VMI's state, as KubeVirt does, and read from there by the source's agent.
        let configuration = try? JSONValue(encoding: await currentMigrationSettings())
        var scheduled = vmim
        var state = vmim.status?.migrationState ?? MigrationState()
        state.sourceNode = source
        state.targetNode = best.name
        state.migrationUid = vmim.metadata.uid
        state.mode = "PreCopy"
        state.migrationConfiguration = configuration
        scheduled.transition(to: .scheduled)
        scheduled.status?.migrationState = state
        scheduled.status?.conditions.set(
            Condition("TargetScheduled", true, reason: "Scheduled", message: "target node \(best.name)"))
        scheduled.status?.conditions.set(Condition("Queued", false, reason: "Admitted"))
        try await store.write(scheduled, from: vmim, guarded: true, cache: migrations)
        // The VMI's migration state starts over for this migration.
        var migrating = vmi
        var vmiState = vmi.status?.migrationState ?? MigrationState()
        vmiState.migrationUid = vmim.metadata.uid
        vmiState.migrationUID = vmim.metadata.uid
        vmiState.sourceNode = source
        vmiState.targetNode = best.name
        vmiState.mode = "PreCopy"
        vmiState.completed = false
        vmiState.failed = false
        vmiState.abortRequested = false
        vmiState.startTimestamp = nil
        vmiState.endTimestamp = nil
        vmiState.abortStatus = nil
        vmiState.failureReason = nil
        vmiState.migrationConfiguration = configuration
        vmiState.progress = nil
        migrating.status?.migrationState = vmiState
        try await store.write(migrating, from: vmi, cache: instances)
        logger.info(
            "migration scheduled",
            metadata: ["migration": "\(vmim.key)", "source": "\(source)", "target": "\(best.name)"])
        return .done
    }

    /// Why `node` cannot be the target (capacity aside), or nil.
    private func targetProblem(
        _ node: Node, vmi: VirtualMachineInstance, vmim: VirtualMachineInstanceMigration, cpu: CPURequirement,
        sourceLabels: [String: String]
    ) -> String? {
        let labels = node.labels
        if let reason = placement.unfit(vmi, on: node, checkVolumes: false) { return reason }
        for (key, value) in (vmim.spec.addedNodeSelector ?? [:]).sorted(by: { $0.key < $1.key })
        where labels[key] != value {
            return "node does not match addedNodeSelector \(key)=\(value)"
        }
        if let reason = cpu.unsatisfied(toMigrateFrom: sourceLabels, to: labels) { return reason }
        if node.status?.tunnelEndpoint == nil { return "its node agent publishes no tunnel endpoint for migrations" }
        return nil
    }

    /// Deadlines and node health while the agents work: the target must be Ready and get ready in time; a silent
    /// source is a condition (the job may still finish); a failure the target recorded reaches the VMI.
    private func supervise(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?) async throws(APIError)
        -> ReconcileResult
    {
        let state = vmim.status?.migrationState
        switch vmim.phase {
        case .scheduled, .preparingTarget, .targetReady:
            let target = state?.targetNode ?? ""
            guard let node = nodes[ObjectKey(namespace: nil, name: target)], placement.readiness.isReady(node) else {
                try await fail(vmim, vmi: vmi, reason: "TargetNodeNotReady", "target node \(target) is not Ready")
                return .done
            }
            let timeout = settings.prepareTimeout
            let waited = vmim.phaseSince.map { Date.now.timeIntervalSince($0) } ?? 0
            if waited > timeout {
                try await fail(
                    vmim, vmi: vmi, reason: "TargetNotReady",
                    "target node \(target) did not get ready within \(Int(timeout)) s (phase \(vmim.phase.rawValue))")
                return .done
            }
            return .requeue(after: .milliseconds(Int64((timeout - waited) * 1000) + 100))
        case .running:
            let source = state?.sourceNode ?? ""
            if !(nodes[ObjectKey(namespace: nil, name: source)].map { placement.readiness.isReady($0) } ?? false) {
                var changed = vmim
                changed.status?.conditions.set(
                    Condition(
                        "SourceNodeReady", false, reason: "NodeUnresponsive",
                        message: "source node \(source) stopped posting status"))
                try await store.write(changed, from: vmim, cache: migrations)
            }
        case .failed:
            // A failure the target recorded: the VMI's migration state says so too.
            if let vmi, let uid = vmim.metadata.uid, var vmiState = vmi.status?.migrationState,
                vmiState.migrationUid == uid,
                vmiState.failed != true, let state
            {
                vmiState.failed = true
                vmiState.completed = true
                vmiState.failureReason = state.failureReason ?? vmiState.failureReason
                vmiState.endTimestamp = state.endTimestamp ?? vmiState.endTimestamp
                vmiState.abortStatus = state.abortStatus ?? vmiState.abortStatus
                var changed = vmi
                changed.status?.migrationState = vmiState
                try await store.write(changed, from: vmi, cache: instances)
            }
        default:
            break
        }
        return .done
    }

    /// A deleted migration that has not finished is aborted: before the job runs it simply fails; while it runs the
    /// source agent is asked (the VMI's `migrationState.abortRequested`). A finished one loses its finalizer.
    private func abortDeleted(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?)
        async throws(APIError)
    {
        switch vmim.phase {
        case .succeeded, .failed:
            guard vmim.metadata.has(finalizer: Migration.finalizer) else { return }
            var released = vmim
            released.metadata.remove(finalizer: Migration.finalizer)
            try await store.write(released, from: vmim, cache: migrations)
        case .running:
            guard let vmi, let uid = vmim.metadata.uid, vmi.status?.migrationState?.migrationUid == uid,
                vmi.status?.migrationState?.abortRequested != true
            else { return }
            var changed = vmi
            changed.status?.migrationState?.abortRequested = true
            try await store.write(changed, from: vmi, cache: instances)
            logger.info("migration abort requested", metadata: ["migration": "\(vmim.key)"])
        default:
            let phase = vmim.phase == .new ? "new" : vmim.phase.rawValue
            try await fail(
                vmim, vmi: vmi, reason: "Aborted", "the migration was deleted before it started (phase \(phase))",
                abortStatus: "Succeeded")
        }
    }

    /// Fails the migration with a reason; the VMI's migration state (if this migration owns it) says so too.
    private func fail(
        _ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?, reason: String, _ message: String,
        abortStatus: String? = nil
    ) async throws(APIError) {
        var failed = vmim
        var state = vmim.status?.migrationState ?? MigrationState()
        state.markFailed(message, at: Migration.timestamp(), abortStatus: abortStatus)
        failed.transition(to: .failed)
        failed.status?.migrationState = state
        failed.status?.conditions.set(Condition("Failed", true, reason: reason, message: message))
        try await store.write(failed, from: vmim, guarded: true, cache: migrations)
        if let vmi, let uid = vmim.metadata.uid, var vmiState = vmi.status?.migrationState, vmiState.migrationUid == uid
        {
            vmiState.markFailed(message, at: state.endTimestamp, abortStatus: abortStatus)
            var changed = vmi
            changed.status?.migrationState = vmiState
            try await store.write(changed, from: vmi, cache: instances)
        }
        logger.notice(
            "migration failed", metadata: ["migration": "\(vmim.key)", "reason": "\(reason)", "message": "\(message)"])
    }
}
