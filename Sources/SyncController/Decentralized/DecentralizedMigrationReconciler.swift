public import ClusterAPI
public import ControllerRuntime
import Foundation
import Logging
import StateMirror

/// Decentralized migrations (KubeVirt's `spec.sendTo` / `spec.receive`), keyed by VirtualMachineInstanceMigration: the
/// half of the migration this cluster owns. The source waits in Synchronizing and the target in WaitingForSync until
/// the peer's half arrives through the sync endpoint (`MirrorReceiver` writes it into the VMI); then both go Pending →
/// Scheduling → Scheduled (the target cluster places the receiving VMI; the source learns the target node from the
/// mirror). Every phase that waits on the peer has `SyncSettings.deadline`. Deleting a VMIM cancels it (the outbox
/// tells the peer and releases the finalizer).
public struct DecentralizedMigrationReconciler: Reconciler {
    public let name = "decentralized-migration"
    let store: any ResourceStore
    let migrations: Cache<VirtualMachineInstanceMigration>
    let instances: Cache<VirtualMachineInstance>
    let nodes: Cache<Node>
    let configuration: Cache<KubeVirt>
    let placement: Placement
    let settings: SyncSettings
    let logger: Logger

    /// The condition a VMIM canceled by its peer carries (set by `MirrorReceiver` before it deletes the VMIM).
    static let canceledByPeerCondition = "CanceledByPeer"
    /// The condition saying whether the peer has this side's latest status (set by the outbox).
    static let synchronizedCondition = "Synchronized"

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let vmim = migrations[key], let side = SyncSide(vmim) else { return .done }
        let vmi = instances[ObjectKey(namespace: key.namespace, name: vmim.spec.vmiName)]
        do {
            return try await advance(vmim, side: side, vmi: vmi)
        } catch {
            guard error.code == 409 else { throw error }
            logger.debug("decentralized migration changed meanwhile", metadata: ["migration": "\(key)"])
            return .done
        }
    }

    private var gateEnabled: Bool {
        (configuration[ObjectKey(namespace: KubeVirt.namespace, name: KubeVirt.name)] ?? KubeVirt()).isEnabled(
            Migration.decentralizedFeatureGate)
    }

    private func advance(_ vmim: VirtualMachineInstanceMigration, side: SyncSide, vmi: VirtualMachineInstance?)
        async throws(APIError) -> ReconcileResult
    {
        if vmim.metadata.isDeleting {
            if !vmim.phase.isFinal {
                let byPeer = vmim.status?.conditions[Self.canceledByPeerCondition]
                try await fail(
                    vmim, side: side, vmi: vmi, reason: "Canceled",
                    byPeer?.message
                        ?? "the migration was canceled: its VirtualMachineInstanceMigration was deleted (phase \(vmim.phase == .new ? "new" : vmim.phase.rawValue))",
                    abortStatus: "Succeeded")
            }
            return .done
        }
        if !vmim.phase.isFinal, settings.advertisedAddresses.isEmpty {
            try await fail(
                vmim, side: side, vmi: vmi, reason: "SyncEndpointDisabled",
                "this cluster's controller runs no sync endpoint (sync-controller --sync-listen), so no peer can reach it"
            )
            return .done
        }
        if !vmim.phase.isFinal, !gateEnabled {
            try await fail(
                vmim, side: side, vmi: vmi, reason: "FeatureGateDisabled",
                "decentralized live migration needs the \(Migration.decentralizedFeatureGate) feature gate in the KubeVirt configuration (spec.configuration.developerConfiguration.featureGates)"
            )
            return .done
        }
        var current = vmim
        if let vmi, current.phase != .new, !current.phase.isFinal {
            current = try await followAdvertisedAddress(current, side: side, vmi: vmi)
        }
        for _ in 0..<4 {
            // The VMI as it is now (each step's write is read back into the cache), and this migration's state on it:
            // a VMI that took part in an earlier migration shows that one's halves until admission replaces them.
            let vmi = instances[ObjectKey(namespace: current.key.namespace, name: current.spec.vmiName)] ?? vmi
            if let vmi, let mirrored = try await mirrorState(current, vmi: vmi) { current = mirrored }
            let state = vmi?.status?.migrationState.flatMap { $0.migrationUid == current.metadata.uid ? $0 : nil }
            switch current.phase {
            case .new:
                guard let admitted = try await admit(current, side: side, vmi: vmi) else {
                    // A receiver whose VMI is not there (or has no phase) yet waits for it; a failed one is done.
                    return side == .target && migrations[current.key]?.phase == .new
                        ? .requeue(after: .seconds(1)) : .done
                }
                current = admitted
            case .synchronizing, .waitingForSync:
                guard state?.peerMigrationUID(of: side) != nil else {
                    return try await deadline(current, side: side, vmi: vmi, waitingFor: "synchronize")
                }
                current = try await transition(current, to: .pending)
            case .pending:
                current = try await transition(current, to: .scheduling)
            case .scheduling:
                switch side {
                case .target: return try await placeReceiver(current, vmi: vmi)
                case .source:
                    guard let node = state?.targetState?.node else {
                        return try await deadline(
                            current, side: side, vmi: vmi, waitingFor: "schedule the receiving VMI")
                    }
                    var scheduled = current
                    scheduled.status?.migrationState?.targetNode = node
                    scheduled.status?.conditions.set(
                        Condition(
                            "TargetScheduled", true, reason: "Scheduled",
                            message: "target node \(node) in the peer cluster"))
                    scheduled.transition(to: .scheduled)
                    current = try await store.write(scheduled, from: current, guarded: true, cache: migrations)
                }
            default:
                return try await supervise(current, side: side, vmi: vmi)
            }
        }
        return .requeue(after: .milliseconds(10))
    }

    // MARK: Admission

    /// A new half: admitted (finalizer, label, this side's half on the VMI and the VMIM, `synchronizationAddresses`,
    /// Synchronizing or WaitingForSync) or failed with the reason; nil while a receiver's VMI does not exist yet.
    private func admit(_ vmim: VirtualMachineInstanceMigration, side: SyncSide, vmi: VirtualMachineInstance?)
        async throws(APIError) -> VirtualMachineInstanceMigration?
    {
        let namespace = vmim.key.namespace ?? "default"
        let uid = vmim.metadata.uid ?? ""
        var state = MigrationState()
        state.migrationUid = uid
        state.migrationUID = uid
        state.mode = "PreCopy"
        state.completed = false
        state.failed = false
        switch side {
        case .source:
            let others = migrations.objects(
                in: ClusterControllers.Index.vmi, ClusterControllers.vmiIndexValue(of: vmim))
            if let problem = MigrationReconciler.admissionProblem(
                namespace: namespace, vmiName: vmim.spec.vmiName, uid: vmim.metadata.uid,
                creationOrder: vmim.creationOrder, vmi: vmi, others: others, decentralized: true)
            {
                try await fail(vmim, side: side, vmi: nil, reason: problem.reason, problem.message)
                return nil
            }
            guard let vmi else { return nil }
            var half = MigrationState.SourceState()
            half.node = vmi.nodeName
            half.migrationUID = uid
            half.domainName = vmi.key.name
            half.domainNamespace = namespace
            half.syncAddress = settings.syncAddress
            half.virtualMachineInstanceUID = vmi.metadata.uid
            half.nodeSelectors = vmi.spec.nodeSelector
            half.domainUUID = vmi.domainUUID
            state.sourceState = half
            state.sourceNode = vmi.nodeName
        case .target:
            guard let vmi else { return nil }
            // Created by its VM a moment ago, its phase not written yet.
            if vmi.metadata.annotations?[Migration.receiverAnnotation] != nil, vmi.status?.phase == nil { return nil }
            guard vmi.status?.phase == .waitingForSync, !vmi.metadata.isDeleting else {
                try await fail(
                    vmim, side: side, vmi: nil, reason: "VMINotReceiving",
                    "virtualmachineinstance \"\(vmim.spec.vmiName)\" is not waiting to receive a migration (phase \(vmi.phase.rawValue)); its VirtualMachine needs runStrategy WaitAsReceiver"
                )
                return nil
            }
            if let other = migrations.objects(
                in: ClusterControllers.Index.vmi, ClusterControllers.vmiIndexValue(of: vmim)
            )
            .first(where: {
                $0.metadata.uid != vmim.metadata.uid && !$0.phase.isFinal && $0.phase != .new && !$0.metadata.isDeleting
            }) {
                try await fail(
                    vmim, side: side, vmi: nil, reason: "MigrationInProgress",
                    "virtualmachineinstance \"\(vmim.spec.vmiName)\" already receives migration \(other.metadata.name ?? "")"
                )
                return nil
            }
            var half = MigrationState.TargetState()
            half.migrationUID = uid
            half.domainName = vmi.key.name
            half.domainNamespace = namespace
            half.syncAddress = settings.syncAddress
            half.virtualMachineInstanceUID = vmi.metadata.uid
            state.targetState = half
        }
        // The VMI carries this migration's state from now on (what the outbox sends).
        if let vmi {
            var changed = vmi
            var status = vmi.status ?? VirtualMachineInstance.Status()
            status.migrationState = state
            if side == .source {
                // KubeVirt's migratedVolumes: the source half of each disk (its claim and size: the target's copy
                // must be as large as the guest's disk, whatever its own DataVolume asks for).
                status.migratedVolumes = (vmi.status?.volumeStatus ?? []).compactMap { volume in
                    guard let claim = volume.persistentVolumeClaimInfo, let name = claim.claimName else { return nil }
                    var info: JSONValue = ["claimName": .string(name)]
                    if let capacity = claim.capacity { info["capacity"] = .object(capacity) }
                    return ["volumeName": .string(volume.name), "sourcePVCInfo": info]
                }
            } else {
                // The target half of each: the target VM's own claim (its DataVolume, on its StorageClass) and what
                // it asks for; the source takes it as KubeVirt's destinationPVCInfo.
                let namespace = vmi.metadata.namespace ?? "default"
                let destinations: [JSONValue] = (vmi.spec.volumes ?? []).compactMap { volume in
                    guard let claim = volume.claimName else { return nil }
                    var info: JSONValue = ["claimName": .string(claim)]
                    let storage = placement.dataVolumes[ObjectKey(namespace: namespace, name: claim)]?.storage
                    if let requested = storage?.resources?.requests?["storage"] {
                        info["requests"] = ["storage": requested]
                    }
                    if let modes = storage?.accessModes { info["accessModes"] = .array(modes.map(JSONValue.string)) }
                    return ["volumeName": .string(volume.name), "destinationPVCInfo": info]
                }
                status.migratedVolumes = MirrorRules.merge(
                    vmi.status?.migratedVolumes, destinations, theirs: "destinationPVCInfo")
            }
            changed.status = status
            try await store.write(changed, from: vmi, guarded: true, cache: instances)
        }
        var admitted = vmim
        admitted.metadata.add(finalizer: Migration.synchronizationFinalizer)
        admitted.metadata.labels = (admitted.metadata.labels ?? [:]).merging([
            Migration.vmiNameLabel: vmim.spec.vmiName
        ]) { $1 }
        admitted.transition(to: side == .source ? .synchronizing : .waitingForSync)
        admitted.status?.migrationState = state
        admitted.status?.synchronizationAddresses = settings.advertisedAddresses
        let stored = try await store.write(admitted, from: vmim, guarded: true, cache: migrations)
        logger.info(
            "decentralized migration admitted",
            metadata: [
                "migration": "\(vmim.key)", "side": "\(side.rawValue)", "migrationID": "\(vmim.migrationID ?? "")",
            ])
        return stored
    }

    // MARK: Phases

    /// Moves `vmim` to `phase` (guarded: the phase history is an array).
    private func transition(_ vmim: VirtualMachineInstanceMigration, to phase: VirtualMachineInstanceMigration.Phase)
        async throws(APIError) -> VirtualMachineInstanceMigration
    {
        var moved = vmim
        moved.transition(to: phase)
        return try await store.write(moved, from: vmim, guarded: true, cache: migrations)
    }

    /// This side's half names the address peers reach this cluster at now: a controller restarted with other
    /// `--advertise` addresses tells its peer (the outbox sends the changed half, and the peer dials the new address).
    private func followAdvertisedAddress(
        _ vmim: VirtualMachineInstanceMigration, side: SyncSide, vmi: VirtualMachineInstance
    ) async throws(APIError) -> VirtualMachineInstanceMigration {
        guard let address = settings.syncAddress, let state = vmi.status?.migrationState,
            state.migrationUid == vmim.metadata.uid
        else { return vmim }
        let current = side == .source ? state.sourceState?.syncAddress : state.targetState?.syncAddress
        guard current != address else { return vmim }
        var moved = vmi
        switch side {
        case .source: moved.status?.migrationState?.sourceState?.syncAddress = address
        case .target: moved.status?.migrationState?.targetState?.syncAddress = address
        }
        try await store.write(moved, from: vmi, guarded: true, cache: instances)
        var changed = vmim
        changed.status?.synchronizationAddresses = settings.advertisedAddresses
        logger.info(
            "this cluster's sync address changed; the peer is told",
            metadata: ["migration": "\(vmim.key)", "address": "\(address)"])
        return try await store.write(changed, from: vmim, cache: migrations)
    }

    /// The VMI's migration state (this migration's: both halves as the mirror keeps them) copied onto the VMIM, as
    /// KubeVirt shows it there; nil when it is already the same.
    private func mirrorState(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance)
        async throws(APIError)
        -> VirtualMachineInstanceMigration?
    {
        guard let uid = vmim.metadata.uid, let state = vmi.status?.migrationState, state.migrationUid == uid,
            vmim.status?.migrationState != state
        else { return nil }
        var changed = vmim
        changed.status = changed.status ?? VirtualMachineInstanceMigration.Status()
        changed.status?.migrationState = state
        return try await store.write(changed, from: vmim, cache: migrations)
    }

    /// A phase that waits on the peer: failed once it waited past the deadline, naming the peer; else looked at again
    /// then.
    private func deadline(
        _ vmim: VirtualMachineInstanceMigration, side: SyncSide, vmi: VirtualMachineInstance?, waitingFor what: String
    ) async throws(APIError) -> ReconcileResult {
        let waited = vmim.phaseSince.map { Date.now.timeIntervalSince($0) } ?? 0
        let limit = settings.deadlineSeconds
        guard waited >= limit else {
            return .requeue(after: .milliseconds(Int64((limit - waited) * 1000) + 50))
        }
        let id = vmim.migrationID ?? ""
        let peer: String
        switch side {
        case .source: peer = "the target cluster at \(vmim.spec.sendTo?.connectURL ?? "")"
        case .target:
            peer =
                vmi?.status?.migrationState?.sourceState?.syncAddress.map { "the source cluster at \($0)" }
                ?? "the source cluster"
        }
        var message = "\(peer) did not \(what) for migrationID \(id) within \(Int(limit)) s"
        if let error = vmim.status?.synchronizationDelivery?.lastError { message += "; last attempt: \(error)" }
        try await fail(vmim, side: side, vmi: vmi, reason: "SynchronizationTimeout", message)
        return .done
    }

    /// The target cluster places its receiving VMI: a Ready node that fits it (selectors, affinity, taints, memory,
    /// volumes) and publishes a tunnel endpoint; without one it waits (`TargetScheduled` says why) until the
    /// unschedulable timeout fails it.
    private func placeReceiver(_ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?)
        async throws(APIError) -> ReconcileResult
    {
        guard let vmi, vmi.status?.phase == .waitingForSync, !vmi.metadata.isDeleting else {
            try await fail(vmim, side: .target, vmi: vmi, reason: "VMINotReceiving", "the receiving VMI is gone")
            return .done
        }
        let settings = (configuration[ObjectKey(namespace: KubeVirt.namespace, name: KubeVirt.name)] ?? KubeVirt())
            .migrations
        let used = Placement.memoryInUse(instances.unordered, migrationTargets: true)
        var reasons: [String] = []
        var fit = MemoryFit()
        // A move between namespaces of this cluster (the source is this controller) needs another host: one libvirt
        // does not migrate a guest to itself.
        let source = vmi.status?.migrationState?.sourceState
        let sourceHere = source?.syncAddress.map { self.settings.advertisedAddresses.contains($0) } ?? false
        for node in nodes.all {
            var reason = placement.unfit(vmi, on: node)
            if reason == nil, node.status?.tunnelEndpoint == nil {
                reason = "its node agent publishes no tunnel endpoint for migrations"
            }
            if reason == nil, sourceHere, node.name == source?.node {
                reason = "it runs the source VMI (a migration needs another host)"
            }
            if let reason = reason ?? fit.consider(node, needing: vmi.requestedMemory, used: used) {
                reasons.append("\(node.name): \(reason)")
            }
        }
        guard let best = fit.best else {
            let message =
                "no node can receive the VMI: "
                + (reasons.isEmpty ? "the cluster has no node" : reasons.sorted().joined(separator: "; "))
            let waited = vmim.phaseSince.map { Date.now.timeIntervalSince($0) } ?? 0
            if waited > settings.unschedulableTimeout {
                try await fail(vmim, side: .target, vmi: vmi, reason: "Unschedulable", message)
                return .done
            }
            var waiting = vmim
            waiting.status?.conditions.set(
                Condition("TargetScheduled", false, reason: "Unschedulable", message: message))
            try await store.write(waiting, from: vmim, cache: migrations)
            return .requeue(after: .milliseconds(Int64((settings.unschedulableTimeout - waited) * 1000) + 100))
        }
        var placed = vmi
        var state = vmi.status?.migrationState ?? MigrationState()
        // The guest keeps its firmware UUID (libvirt refuses a destination domain with another): the receiving VMI
        // takes the source's as its own, before anything runs.
        if let uuid = state.sourceState?.domainUUID, UUID(uuidString: uuid) != nil { placed.domainUUID = uuid }
        state.targetNode = best.name
        state.targetState = state.targetState ?? MigrationState.TargetState()
        state.targetState?.node = best.name
        placed.status?.migrationState = state
        try await store.write(placed, from: vmi, guarded: true, cache: instances)
        var scheduled = vmim
        scheduled.status?.migrationState = state
        scheduled.status?.conditions.set(
            Condition("TargetScheduled", true, reason: "Scheduled", message: "target node \(best.name)"))
        scheduled.transition(to: .scheduled)
        try await store.write(scheduled, from: vmim, guarded: true, cache: migrations)
        logger.info("receiving VMI placed", metadata: ["migration": "\(vmim.key)", "node": "\(best.name)"])
        return .done
    }

    /// After scheduling: a failure the peer reported ends this side too; a source whose target says its domain is
    /// ready is TargetReady.
    private func supervise(_ vmim: VirtualMachineInstanceMigration, side: SyncSide, vmi: VirtualMachineInstance?)
        async throws(APIError) -> ReconcileResult
    {
        guard !vmim.phase.isFinal else {
            if vmim.phase == .failed { try await failReceiver(vmim, side: side, vmi: vmi) }
            return .done
        }
        let state = vmi?.status?.migrationState
        if let state, state.migrationUid == vmim.metadata.uid, state.failed == true {
            let peer = side == .source ? "the target cluster" : "the source cluster"
            try await fail(
                vmim, side: side, vmi: vmi, reason: "PeerFailed",
                "\(peer) failed the migration: \(state.failureReason ?? "no reason given")")
            return .done
        }
        guard let mirrored = state, mirrored.migrationUid == vmim.metadata.uid else { return .done }
        switch side {
        case .source:
            // The target cluster prepares as soon as its VMI is placed, which is when this side learns the node.
            var current = vmim
            if current.phase == .scheduled { current = try await transition(current, to: .preparingTarget) }
            if current.phase == .preparingTarget {
                guard mirrored.targetState?.domainReadyTimestamp != nil else {
                    return try await deadline(current, side: side, vmi: vmi, waitingFor: "prepare its target")
                }
                current = try await transition(current, to: .targetReady)
            }
            // Only the source node's agent says the guest left (libvirt there knows): its VMI Succeeded ends this side.
            if let vmi, vmi.leftByDecentralizedMigration, [.targetReady, .running].contains(current.phase) {
                if current.phase == .targetReady { current = try await transition(current, to: .running) }
                _ = try await transition(current, to: .succeeded)
            }
        case .target:
            var current = vmim
            // The source's job started (its start time came through the mirror): Running here too.
            if current.phase == .targetReady, mirrored.startTimestamp != nil || mirrored.completed == true {
                current = try await transition(current, to: .running)
            }
            // The guest runs on this cluster's node (its agent claimed the receiving VMI).
            if current.phase == .running, let vmi, vmi.phase == .running, vmi.nodeName != nil,
                mirrored.completed == true, mirrored.failed != true
            {
                _ = try await transition(current, to: .succeeded)
            }
        }
        return .done
    }

    // MARK: Failure

    /// Fails this half with a reason (condition `Failed`, KubeVirt's `DecentralizedLiveMigrationFailure` reason in its
    /// message): the VMI's migration state says so too, a receiving VMI that never ran fails, a source VMI keeps
    /// running.
    private func fail(
        _ vmim: VirtualMachineInstanceMigration, side: SyncSide, vmi: VirtualMachineInstance?, reason: String,
        _ message: String, abortStatus: String? = nil
    ) async throws(APIError) {
        var failed = vmim
        var state = vmim.status?.migrationState ?? MigrationState()
        state.markFailed(message, at: Migration.timestamp(), abortStatus: abortStatus)
        failed.transition(to: .failed)
        failed.status?.migrationState = state
        failed.status?.conditions.set(Condition("Failed", true, reason: reason, message: message))
        failed.status?.conditions.set(
            Condition("DecentralizedLiveMigrationFailure", true, reason: reason, message: message))
        try await store.write(failed, from: vmim, guarded: true, cache: migrations)
        // The VMI says so too — unless it ended meanwhile (its source agent retired it: the guest left; its record is
        // the agent's, and a failure noted on it later does not undo that: "migrated away" is its reason).
        if let vmi, let uid = vmim.metadata.uid, var vmiState = vmi.status?.migrationState,
            vmiState.migrationUid == uid,
            !vmi.phase.isFinal
        {
            vmiState.markFailed(message, at: state.endTimestamp, abortStatus: abortStatus)
            var changed = vmi
            changed.status?.migrationState = vmiState
            if side == .target, vmi.status?.phase == .waitingForSync {
                changed.status?.phase = .failed
                changed.status?.reason = reason
                changed.status?.message = message
            }
            try await store.write(changed, from: vmi, cache: instances)
        }
        logger.notice(
            "decentralized migration failed",
            metadata: [
                "migration": "\(vmim.key)", "side": "\(side.rawValue)", "reason": "\(reason)", "message": "\(message)",
            ])
    }

    /// A failed receiver's VMI that never ran fails too (a restart of the controller between the two writes, or a
    /// failure its node's agent recorded on the VMIM only), and its migration state says so — what the outbox sends, so
    /// the source side hears of it.
    private func failReceiver(_ vmim: VirtualMachineInstanceMigration, side: SyncSide, vmi: VirtualMachineInstance?)
        async throws(APIError)
    {
        guard side == .target, let vmi, vmi.status?.phase == .waitingForSync,
            let state = vmi.status?.migrationState, state.migrationUid == vmim.metadata.uid
        else { return }
        let reason =
            vmim.status?.migrationState?.failureReason ?? vmim.status?.conditions["Failed"]?.message
            ?? "the target failed the migration"
        var changed = vmi
        changed.status?.phase = .failed
        changed.status?.reason = vmim.status?.conditions["Failed"]?.reason ?? "MigrationFailed"
        changed.status?.message = reason
        if state.failed != true {
            var failed = state
            failed.markFailed(
                reason, at: vmim.status?.migrationState?.endTimestamp ?? Migration.timestamp(),
                abortStatus: vmim.status?.migrationState?.abortStatus)
            changed.status?.migrationState = failed
        }
        try await store.write(changed, from: vmi, cache: instances)
    }
}
