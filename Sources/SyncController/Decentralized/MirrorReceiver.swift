import ClusterAPI
import ControllerRuntime
import Foundation
import Logging
public import StateMirror

/// The cluster's side of the sync endpoint: a peer's half of a migration lands in the VMI of the VMIM with that
/// migrationID (the receiving VMIM for the source's status, the sending one for the target's), by `MirrorRules`; the
/// first peer to sync a migration is bound to it and any other refused with a condition naming it; a cancel deletes
/// the VMIM it names. Reads the caches, writes the store on the version read (a conflict reads again).
public struct MirrorReceiver: SyncReceiver {
    let store: any ResourceStore
    let migrations: Cache<VirtualMachineInstanceMigration>
    let instances: Cache<VirtualMachineInstance>
    let logger: Logger
    /// Tells the migration's reconcilers that something arrived (the VMI's change brings it too; this is sooner).
    let changed: @Sendable (ObjectKey) -> Void

    /// How many times a write that lost a race is tried again on a fresh read.
    static let attempts = 5

    public func applySourceStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String {
        try await apply(status, from: peer, onto: .target)
    }

    public func applyTargetStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String {
        try await apply(status, from: peer, onto: .source)
    }

    /// The peer's status onto this cluster's `side` of migration `status.migrationID`.
    private func apply(_ status: PeerStatus, from peer: SyncPeer, onto side: SyncSide) async throws(SyncRefusal)
        -> String
    {
        let id = status.migrationID
        let candidates = migrations.objects(in: ClusterControllers.Index.migrationID, side.indexValue(id))
        guard let vmim = candidates.first(where: { !$0.metadata.isDeleting && !$0.phase.isFinal }) ?? candidates.first
        else {
            throw SyncRefusal(.notFound, "\(side.rawValue): unable to locate VMI for migrationID \(id)")
        }
        try await bind(vmim, to: peer, migrationID: id)
        // A final migration, or one not admitted yet (its VMI does not carry it): nothing to apply. The first is
        // answered "success" as KubeVirt does; the second is refused so the peer sends again.
        if vmim.phase.isFinal || vmim.metadata.isDeleting { return "success" }
        guard vmim.phase != .new else {
            throw SyncRefusal(.notFound, "\(side.rawValue): migration for migrationID \(id) is not admitted yet")
        }
        let key = ObjectKey(namespace: vmim.key.namespace, name: vmim.spec.vmiName)
        for attempt in 0..<Self.attempts {
            let vmi: VirtualMachineInstance
            // The first try merges onto the cache's copy: a write is guarded by its resourceVersion (a copy the store
            // has moved past is a conflict, and the next try reads the store), but deciding that nothing is to be
            // written takes the store's copy — a cached one may not carry the migration yet.
            let cached = attempt == 0 ? instances[key] : nil
            do {
                if let cached {
                    vmi = cached
                } else {
                    vmi = try VirtualMachineInstance(
                        json: try await store.get(
                            Kinds.virtualMachineInstance, namespace: key.namespace, name: key.name)
                    )
                }
            } catch  where error.code == 404 {
                throw SyncRefusal(
                    .notFound, "\(side.rawValue): unable to locate VMI for migrationID \(id), vmi: \(key)")
            } catch {
                throw SyncRefusal(.unavailable, "reading the VMI of migrationID \(id) failed: \(error.message)")
            }
            // A VMI that carries another migration: the message is not for it.
            guard let local = vmi.status, local.migrationState?.migrationUid == vmim.metadata.uid else {
                if cached != nil { continue }
                return "success"
            }
            let merged =
                side == .target
                ? MirrorRules.takeSource(status.status, into: local)
                : MirrorRules.takeTarget(status.status, into: local)
            guard let merged else {
                if cached != nil { continue }
                return "success"
            }
            var changed = vmi
            changed.status = merged
            do {
                try await store.write(changed, from: vmi, guarded: true, cache: instances)
                self.changed(vmim.key)
                return "success"
            } catch  where error.code == 409 || (error.code == 404 && cached != nil) {
                // Moved on, or (for the cache's copy) gone: the next try reads the store, which says which.
                continue
            } catch {
                throw SyncRefusal(.unavailable, "storing the status of migrationID \(id) failed: \(error.message)")
            }
        }
        throw SyncRefusal(.unavailable, "the VMI of migrationID \(id) kept changing; send again")
    }

    /// Binds `vmim` to `peer` on its first verified exchange; a different peer is refused, and the VMIM says who tried.
    private func bind(_ vmim: VirtualMachineInstanceMigration, to peer: SyncPeer, migrationID: String)
        async throws(SyncRefusal)
    {
        let bound = vmim.status?.synchronizationPeer
        let binding: SynchronizationPeer
        do {
            binding = try peer.admit(to: migrationID, boundTo: bound)
        } catch {
            await setCondition(
                Condition("SynchronizationRefused", true, reason: "PeerNotBound", message: error.description), on: vmim)
            logger.warning(
                "sync refused: the migration is bound to another peer",
                metadata: ["migration": "\(vmim.key)", "peer": "\(peer)"])
            throw error
        }
        guard bound == nil else { return }
        var changed = vmim
        changed.status = changed.status ?? VirtualMachineInstanceMigration.Status()
        changed.status?.synchronizationPeer = binding
        do {
            try await store.write(changed, from: vmim, guarded: true, cache: migrations)
        } catch {
            // Another call bound it meanwhile: that binding decides.
            throw SyncRefusal(.unavailable, "binding migrationID \(migrationID) raced; send again")
        }
        logger.info(
            "decentralized migration bound to its peer", metadata: ["migration": "\(vmim.key)", "peer": "\(peer)"])
    }

    /// Sets `condition` on the VMIM as the store holds it (read again after a conflict); best effort: the refusal
    /// itself is the answer.
    private func setCondition(_ condition: Condition, on vmim: VirtualMachineInstanceMigration) async {
        for _ in 0..<Self.attempts {
            guard
                let stored = try? await store.get(Kinds.migration, namespace: vmim.key.namespace, name: vmim.key.name),
                let current = try? VirtualMachineInstanceMigration(json: stored)
            else { return }
            var marked = current
            marked.status = marked.status ?? VirtualMachineInstanceMigration.Status()
            marked.status?.conditions.set(condition)
            do {
                try await store.write(marked, from: current, cache: migrations)
                return
            } catch  where error.code == 409 {
                continue
            } catch {
                return
            }
        }
    }

    public func cancelMigration(uid migrationUID: String, from peer: SyncPeer) async throws(SyncRefusal) -> String {
        guard
            let vmim = migrations.objects(in: CollectedKind.uidIndex, migrationUID).first(where: \.isDecentralized)
        else {
            return "migration canceled"
        }
        if let bound = vmim.status?.synchronizationPeer, bound.cluster != peer.cluster {
            throw SyncRefusal(
                .permissionDenied,
                "migration \(migrationUID) is synchronized with cluster \"\(bound.cluster)\"; \(peer) may not cancel it"
            )
        }
        if !vmim.metadata.isDeleting {
            await setCondition(
                Condition(
                    DecentralizedMigrationReconciler.canceledByPeerCondition, true, reason: "Canceled",
                    message: "the migration was canceled by its peer, \(peer)"), on: vmim)
            do {
                _ = try await store.delete(
                    Kinds.migration, namespace: vmim.key.namespace, name: vmim.key.name, precondition: nil)
            } catch  where error.code == 404 {
                return "migration canceled"
            } catch {
                throw SyncRefusal(.unavailable, "canceling migration \(migrationUID) failed: \(error.message)")
            }
            logger.info("decentralized migration canceled by its peer", metadata: ["migration": "\(vmim.key)"])
        }
        changed(vmim.key)
        return "migration canceled"
    }
}
