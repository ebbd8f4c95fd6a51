import ClusterAPI
import ClusterClient
import Foundation
import Hypervisor
import Logging

/// Where a guest lives once libvirt's job has finished is a fact read from libvirt, not a consequence of what the
/// agents managed to write: the source hands the VMI over and retries until that lands; the target claims a guest
/// that runs on it when nobody handed it over; a target's cleanup never removes a guest that runs there; and an agent
/// removes domains that no VMI claims any more.
extension NodeAgent {
    // MARK: Writes that must land

    /// Whether an API failure may pass by itself: the controller restarting, stopped or unreachable, a timeout.
    static func isTransient(_ error: APIError) -> Bool {
        [429, 500, 502, 503, 504].contains(error.code)
    }

    /// Runs `write` until it succeeds. Transient failures are retried with exponential backoff (200 ms doubling to
    /// 5 s), for `limit` (nil: until the task is cancelled); any other error is thrown at once.
    func persistently<T>(_ what: String, for limit: Duration? = nil, _ write: () async throws(APIError) -> T)
        async throws(APIError) -> T
    {
        let deadline = limit.map { ContinuousClock.now + $0 }
        var delay = Duration.milliseconds(200)
        var attempts = 0
        while true {
            do {
                return try await write()
            } catch {
                attempts += 1
                let expired = deadline.map { ContinuousClock.now >= $0 } ?? false
                guard Self.isTransient(error), !expired, !Task.isCancelled else { throw error }
                if attempts == 1 || attempts % 10 == 0 {
                    logger.warning(
                        "write failed; retrying",
                        metadata: ["what": "\(what)", "attempt": "\(attempts)", "error": "\(error)"])
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    // MARK: Source

    /// After libvirt moved the guest to `target`: the VMI goes to the target node (with the migration's final state,
    /// what `final` sets) and the migration to Succeeded, each retried until it lands or is already true — the guest
    /// runs on the target now, so a failed write must never turn into a failed migration (whose cleanup would remove
    /// that guest). Returns the migration as last stored.
    func handOver(
        _ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance, target: String,
        final: @escaping @Sendable (inout MigrationState) -> Void
    ) async -> VirtualMachineInstanceMigration {
        let uid = vmim.metadata.uid ?? ""
        var handed = VirtualMachineInstance.Status()
        handed.nodeName = target
        handed.migrationState = MigrationState()
        final(&handed.migrationState!)
        do {
            try await persistently("hand-over of \(vmi.key) to \(target)") { () async throws(APIError) in
                do throws(APIError) {
                    try await client.set(\.status, of: vmi, to: handed)
                } catch  where error.code == 403 || error.code == 409 {
                    // An earlier attempt landed (its answer was lost), or the target claimed the guest first.
                    let vmi = try await client.get(
                        VirtualMachineInstance.self, namespace: vmi.key.namespace, name: vmi.key.name)
                    guard vmi.nodeName == target else { throw error }
                }
            }
        } catch {
            // 404: the VMI was deleted meanwhile; the target's agent removes the guest with it.
            logger.error(
                "the VMI could not be handed over",
                metadata: ["migration": "\(uid)", "target": "\(target)", "error": "\(error)"])
        }
        return await complete(vmim, final: final)
    }

    /// The migration to Succeeded (with what `final` sets), retried until it lands or the migration moved on.
    func complete(
        _ vmim: VirtualMachineInstanceMigration, final: @escaping @Sendable (inout MigrationState) -> Void
    ) async -> VirtualMachineInstanceMigration {
        let uid = vmim.metadata.uid ?? ""
        var current = vmim
        do {
            current = try await persistently("migration \(uid) Succeeded") {
                () async throws(APIError) -> VirtualMachineInstanceMigration in
                do throws(APIError) {
                    return try await transition(current, to: .succeeded) { vmim in
                        var state = vmim.status?.migrationState ?? MigrationState()
                        final(&state)
                        vmim.status?.migrationState = state
                    }
                } catch  where error.code == 409 {
                    // Moved on meanwhile: done if it says Succeeded (the target's claim); a failure recorded before the
                    // guest moved stays as it is — the VMI says where the guest runs.
                    current = try await client.get(
                        VirtualMachineInstanceMigration.self, namespace: vmim.key.namespace, name: vmim.key.name)
                    if current.phase.isFinal { return current }
                    throw APIError(.serviceUnavailable, code: 503, error.message)
                }
            }
        } catch {
            logger.error(
                "the migration could not be recorded as succeeded",
                metadata: ["migration": "\(uid)", "error": "\(error)"])
        }
        return current
    }

    /// Whether the guest of `domainName` still lives on this node (running, or paused — also for its migration's
    /// memory copy). Unknown (libvirt does not answer) counts as here.
    func guestIsHere(_ domainName: String) async -> Bool {
        guard let libvirt else { return true }
        do {
            let domain = try await libvirt.domain(named: domainName)
            return try await domain.presence() != .inactive
        } catch {
            return (error as HypervisorError).code != .domainNotFound
        }
    }

    // MARK: Target

    /// How long a target sees the incoming guest running before it claims it itself: the source, when it can, hands
    /// over within milliseconds of libvirt's job; the target steps in when that did not happen.
    static let claimDelay: Duration = .seconds(2)

    /// The guest of a migration this node prepared runs here: unless the VMI says so already, claim it — the VMI to
    /// this node, the migration Succeeded — once it has been seen running for `claimDelay`. Returns whether the guest
    /// runs here.
    @discardableResult
    func claimIfRunningHere(_ made: PreparedTarget, vmim: VirtualMachineInstanceMigration?) async -> Bool {
        guard let libvirt, let domain = try? await libvirt.domain(named: made.domainName),
            (try? await domain.presence()) == .live
        else {
            liveSince[made.uid] = nil
            return false
        }
        let since = liveSince[made.uid] ?? .now
        liveSince[made.uid] = since
        guard ContinuousClock.now - since >= Self.claimDelay else { return true }
        let me = configuration.name
        do {
            try await persistently("claim of \(made.namespace)/\(made.vmiName)", for: .seconds(60)) {
                () async throws(APIError) in
                let vmi = try await client.get(
                    VirtualMachineInstance.self, namespace: made.namespace, name: made.vmiName)
                let state = vmi.status?.migrationState
                guard vmi.nodeName != me else { return }
                guard state?.migrationUid == made.uid else {
                    logger.error(
                        "a guest runs here for a migration the VMI no longer names",
                        metadata: [
                            "migration": "\(made.uid)", "vmi": "\(made.namespace)/\(made.vmiName)",
                            "names": "\(state?.migrationUid ?? "none")",
                        ])
                    return
                }
                var claimed = VirtualMachineInstance.Status()
                claimed.nodeName = me
                var changes = MigrationState()
                changes.completed = true
                changes.failed = false
                changes.targetNode = me
                if state?.endTimestamp == nil { changes.endTimestamp = Migration.timestamp() }
                claimed.migrationState = changes
                try await client.set(\.status, of: vmi, to: claimed)
                logger.warning(
                    "claimed a guest that libvirt moved here but nobody handed over",
                    metadata: [
                        "migration": "\(made.uid)", "vmi": "\(made.namespace)/\(made.vmiName)",
                    ])
            }
            if let vmim, vmim.phase == .running {
                _ = try? await transition(vmim, to: .succeeded) { vmim in
                    var state = vmim.status?.migrationState ?? MigrationState()
                    state.completed = true
                    state.failed = false
                    if state.endTimestamp == nil { state.endTimestamp = Migration.timestamp() }
                    vmim.status?.migrationState = state
                    vmim.status?.conditions.set(
                        Condition(
                            "ClaimedByTarget", true, reason: "HandoverMissing",
                            message: "the guest runs on \(me); the source did not hand it over, so the target did"))
                }
            }
        } catch {
            logger.error(
                "could not claim a guest that runs here", metadata: ["migration": "\(made.uid)", "error": "\(error)"])
        }
        return true
    }

    // MARK: Orphans

    /// Removes domains on this node that no VMI claims: the VMI is gone, is being deleted, or is another VMI of the
    /// same name (a VM deleted, or deleted and re-created, while this node was cut off). A guest whose VMI names
    /// another node is paused, never destroyed — it may be the only copy, and two running copies must not share a
    /// disk. Domains of migrations in flight here are left alone; each candidate is read from the API before anything
    /// is done to it.
    func removeOrphans(claimed: Set<String>) async {
        guard let libvirt, let names = try? await libvirt.domainNames() else { return }
        let busy = Set(prepared.values.map(\.domainName))
        for domainName in names where !claimed.contains(domainName) && !busy.contains(domainName) {
            guard let separator = domainName.firstIndex(of: "_") else { continue }
            let namespace = String(domainName[..<separator])
            let name = String(domainName[domainName.index(after: separator)...])
            guard let domain = try? await libvirt.domain(named: domainName) else { continue }
            let vmi: VirtualMachineInstance?
            do {
                vmi = try await client.get(VirtualMachineInstance.self, namespace: namespace, name: name)
            } catch  where error.code == 404 {
                vmi = nil
            } catch {
                continue
            }
            let identity = vmi?.domainUUID
            let uuid = try? await domain.uuid()
            let state = vmi?.status?.migrationState
            if let vmi, !vmi.metadata.isDeleting, identity == uuid || identity == nil {
                if vmi.nodeName == configuration.name { continue }
                if state?.targetNode == configuration.name, state?.completed != true { continue }
                // Its VMI runs elsewhere: hold this copy (a post-copy half is left to its job).
                if (try? await domain.presence()) == .live, (try? await domain.state()) != .paused {
                    try? await domain.suspend()
                    logger.error(
                        "paused a guest whose VMI runs on another node",
                        metadata: [
                            "domain": "\(domainName)", "vmi node": "\(vmi.nodeName ?? "none")",
                        ])
                }
                continue
            }
            try? await domain.destroy()
            try? await domain.undefine()
            logger.warning(
                "removed a domain that no VMI claims",
                metadata: [
                    "domain": "\(domainName)",
                    "why":
                        "\(vmi == nil ? "the VMI is gone" : vmi?.metadata.isDeleting == true ? "the VMI is being deleted" : "another VMI has its name")",
                ])
        }
    }
}
