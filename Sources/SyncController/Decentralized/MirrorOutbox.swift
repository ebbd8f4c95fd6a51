public import ClusterAPI
public import ControllerRuntime
import Foundation
import Logging
import NIOConcurrencyHelpers
import StateMirror

/// The durable outbox of decentralized migrations, keyed by VMIM: this side's VMI status goes to the peer
/// (`SyncSourceMigrationStatus` to the target's `connectURL`, `SyncTargetMigrationStatus` to the source's
/// `sourceState.syncAddress`) whenever it differs from what the peer last acknowledged — the acknowledged digest is
/// kept in the VMIM's `status.synchronizationDelivery`, so a restarted controller resends exactly what was not
/// delivered. At least once, with backoff; a peer whose address changed is dialled at the new one. A deleted VMIM's
/// cancel goes to the peer (`CancelMigration` with the peer's VMIM uid) before the finalizer is released.
public struct MirrorOutbox: Reconciler {
    public let name = "sync-outbox"
    let store: any ResourceStore
    let migrations: Cache<VirtualMachineInstanceMigration>
    let instances: Cache<VirtualMachineInstance>
    let dialer: SyncDialer
    let settings: SyncSettings
    let logger: Logger
    /// Failed attempts per VMIM since its last delivery (the backoff; not stored: a restart may try at once).
    let failures = NIOLockedValueBox<[ObjectKey: Int]>([:])

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let vmim = migrations[key], let side = SyncSide(vmim), let id = vmim.migrationID else {
            _ = failures.withLockedValue { $0.removeValue(forKey: key) }
            return .done
        }
        if vmim.metadata.isDeleting { return try await cancel(vmim, side: side) }
        guard vmim.phase != .new,
            let vmi = instances[ObjectKey(namespace: key.namespace, name: vmim.spec.vmiName)],
            let status = vmi.status, status.migrationState?.migrationUid == vmim.metadata.uid
        else { return .done }
        let address =
            side == .source ? vmim.spec.sendTo?.connectURL : status.migrationState?.sourceState?.syncAddress
        guard let address else { return .done }  // a target learns where its source is from the source's first status
        // Only what the peer takes decides: a status that changed in the half this side took from the peer is not
        // echoed back to it.
        let digest = Self.digest(MirrorRules.peerView(of: status, sentBySource: side == .source))
        let delivery = vmim.status?.synchronizationDelivery
        if delivery?.deliveredDigest == digest, delivery?.peerAddress == address { return .done }
        do throws(SyncCallError) {
            switch side {
            case .source: _ = try await dialer.sendSourceStatus(to: address, migrationID: id, status: status)
            case .target: _ = try await dialer.sendTargetStatus(to: address, migrationID: id, status: status)
            }
        } catch {
            return try await failed(vmim, address: address, error: error)
        }
        _ = failures.withLockedValue { $0.removeValue(forKey: key) }
        var delivered = vmim
        var record = SynchronizationDelivery()
        record.deliveredDigest = digest
        record.deliveredTimestamp = Migration.timestamp()
        record.peerAddress = address
        delivered.status?.synchronizationDelivery = record
        delivered.status?.conditions.set(
            Condition(
                DecentralizedMigrationReconciler.synchronizedCondition, true, reason: "Delivered",
                message: "the peer at \(address) has this side's status"))
        try await store.write(delivered, from: vmim, cache: migrations)
        return .done
    }

    /// A failed delivery: the VMIM says why (written only when the reason changes, so the write does not bring the key
    /// back at once), and the key comes back after a backoff (0.25 s doubling to 8 s).
    private func failed(_ vmim: VirtualMachineInstanceMigration, address: String, error: SyncCallError) async throws
        -> ReconcileResult
    {
        let attempts = failures.withLockedValue { failures -> Int in
            failures[vmim.key, default: 0] += 1
            return failures[vmim.key, default: 1]
        }
        if vmim.status?.synchronizationDelivery?.lastError != error.description {
            var marked = vmim
            var record = vmim.status?.synchronizationDelivery ?? SynchronizationDelivery()
            record.lastError = error.description
            record.lastAttemptTimestamp = Migration.timestamp()
            record.failedAttempts = Int64(attempts)
            marked.status?.synchronizationDelivery = record
            let reason =
                switch error.kind {
                case .refused: "PeerRefused"
                case .unreachable: "PeerUnreachable"
                }
            marked.status?.conditions.set(
                Condition(
                    DecentralizedMigrationReconciler.synchronizedCondition, false, reason: reason,
                    message: error.description))
            _ = try? await store.write(marked, from: vmim, cache: migrations)
            logger.info(
                "sync delivery failed; retrying",
                metadata: ["migration": "\(vmim.key)", "peer": "\(address)", "error": "\(error.description)"])
        }
        let delay = min(8_000, 250 << min(attempts - 1, 5))
        return .requeue(after: .milliseconds(Int64(delay)))
    }

    /// A deleted half: its peer hears of the cancel (unless the cancel came from the peer, or the peer never showed),
    /// then the finalizer goes. A peer that cannot be told by the deadline is given up on.
    private func cancel(_ vmim: VirtualMachineInstanceMigration, side: SyncSide) async throws -> ReconcileResult {
        guard vmim.metadata.has(finalizer: Migration.synchronizationFinalizer) else { return .done }
        // The reconciler records the cancel first (Failed, abortStatus Succeeded).
        guard vmim.phase.isFinal else { return .requeue(after: .milliseconds(100)) }
        let state = vmim.status?.migrationState
        let peerUID = state?.peerMigrationUID(of: side)
        let address = side == .source ? vmim.spec.sendTo?.connectURL : state?.sourceState?.syncAddress
        let byPeer = vmim.status?.conditions[DecentralizedMigrationReconciler.canceledByPeerCondition] != nil
        if !byPeer, let peerUID, let address {
            do throws(SyncCallError) {
                _ = try await dialer.cancelMigration(at: address, migrationUID: peerUID)
            } catch {
                let since = vmim.metadata.deletionTimestamp.flatMap(Migration.parseTimestamp) ?? .now
                if Date.now.timeIntervalSince(since) < settings.deadlineSeconds {
                    return try await failed(vmim, address: address, error: error)
                }
                logger.warning(
                    "the peer could not be told of the cancel before the deadline; releasing the migration",
                    metadata: ["migration": "\(vmim.key)", "peer": "\(address)", "error": "\(error.description)"])
            }
        }
        var released = vmim
        released.metadata.remove(finalizer: Migration.synchronizationFinalizer)
        try await store.write(released, from: vmim, cache: migrations)
        _ = failures.withLockedValue { $0.removeValue(forKey: vmim.key) }
        return .done
    }

    /// A digest of what the peer takes of a status (FNV-1a over its compact JSON, whose keys are sorted): what decides
    /// whether the peer has seen it.
    static func digest(_ view: JSONValue) -> String {
        let bytes = view.jsonData()
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}
