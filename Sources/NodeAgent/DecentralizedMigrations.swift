import ClusterAPI
import ClusterClient
import ControllerRuntime
import Foundation
import Hypervisor
import Logging

/// The node's side of a decentralized migration (to or from another cluster or namespace), where it differs from a
/// migration inside the cluster: nobody hands the VMI over. The target claims the guest once libvirt runs it there
/// (the receiving VMI to this node, Running); the source marks its VMI Succeeded once libvirt says the guest left — the
/// source VM keeps its own disks (its DataVolumes stay; the peer cluster has its copy on its own volumes).
extension NodeAgent {
    /// The guest of a decentralized migration this node prepared runs here: the receiving VMI becomes this node's,
    /// Running, its migration completed (the mirror tells the source cluster). Only what libvirt says counts: a domain
    /// that is not live here claims nothing.
    /// Returns whether the guest runs here.
    @discardableResult
    func claimReceived(_ made: PreparedTarget) async -> Bool {
        guard let libvirt, let domain = try? await libvirt.domain(named: made.domainName),
            (try? await domain.presence()) == .live
        else { return false }
        let me = configuration.name
        do {
            let vmi = try await client.get(VirtualMachineInstance.self, namespace: made.namespace, name: made.vmiName)
            let state = vmi.status?.migrationState
            guard vmi.nodeName != me else { return true }
            guard state?.migrationUid == made.uid else {
                logger.error(
                    "a received guest runs here for a migration its VMI no longer names",
                    metadata: ["migration": "\(made.uid)", "vmi": "\(made.namespace)/\(made.vmiName)"])
                return true
            }
            var claimed = VirtualMachineInstance.Status()
            claimed.nodeName = me
            claimed.phase = .running
            claimed.launcherDomain = made.domainName
            claimed.serialConsole = "\(configuration.runDirectory)/\(made.domainName).serial"
            claimed.interfaces = Self.interfaceStatus(try DomainMapping.interfaces(of: vmi))
            // Its disks as they are here now (a later migration sends their sizes on).
            var volumes: [VirtualMachineInstance.VolumeStatus] = []
            for volume in vmi.spec.volumes ?? [] {
                guard let claim = volume.claimName else { continue }
                let dataVolume = try await client.get(DataVolume.self, namespace: made.namespace, name: claim)
                volumes.append(await Self.volumeStatus(volume.name, claim: claim, disk: try await self.volumes.disk(for: dataVolume)))
            }
            claimed.volumeStatus = volumes
            var changes = MigrationState()
            changes.completed = true
            changes.failed = false
            changes.targetNode = me
            if state?.endTimestamp == nil { changes.endTimestamp = Migration.timestamp() }
            var half = MigrationState.TargetState()
            half.domainDetected = true
            changes.targetState = half
            claimed.migrationState = changes
            try await client.set(\.status, of: vmi, to: claimed)
            logger.info(
                "received guest runs here: claimed its VMI",
                metadata: ["migration": "\(made.uid)", "vmi": "\(made.namespace)/\(made.vmiName)"])
            return true
        } catch {
            // Looked at again on the migration's next pass (every couple of seconds until it ends).
            logger.warning(
                "could not claim a received guest yet", metadata: ["migration": "\(made.uid)", "error": "\(error)"])
        }
        return true
    }

    /// The migration this node prepared to receive `domain`, if any.
    func incomingMigration(forDomain domain: String) -> ObjectKey? {
        guard let made = prepared.values.first(where: { $0.domainName == domain }) else { return nil }
        return incomingMigrations.unordered.first { $0.metadata.uid == made.uid }?.key
    }

    /// A VMI on this node whose guest left by a decentralized migration that completed — libvirt has no live domain
    /// of it here, and its migration state (its own uid in the source half) says the migration completed — is
    /// Succeeded: it must never be started again here (the guest runs in the peer cluster). Returns whether it was.
    func leftByDecentralizedMigration(_ vmi: VirtualMachineInstance, domainPresent: Bool) async -> Bool {
        if vmi.leftByDecentralizedMigration { return !vmi.metadata.isDeleting }
        guard let state = vmi.status?.migrationState, let uid = vmi.metadata.uid,
            state.sourceState?.virtualMachineInstanceUID == uid, state.sourceNode == configuration.name
        else { return false }
        // Ended (either way, as the mirror says) and libvirt has no guest here: whatever the record, it is not started
        // again here — it may run in the peer cluster (a failure recorded after the switchover).
        guard state.completed == true, !domainPresent, !vmi.metadata.isDeleting,
            !(await guestIsHere(Resources.domainName(namespace: vmi.metadata.namespace ?? "default", name: vmi.metadata.name ?? "")))
        else { return false }
        await retire(vmi, final: { _ in })
        return true
    }

    /// The source VMI of a decentralized migration whose guest left: Succeeded, its migration state completed (with
    /// what `final` sets), retried until it lands — until then the VMI looks like a guest that stopped.
    func retire(_ vmi: VirtualMachineInstance, final: @escaping @Sendable (inout MigrationState) -> Void) async {
        var status = VirtualMachineInstance.Status()
        status.phase = .succeeded
        status.reason = Migration.migratedAwayReason
        status.message = "the guest was live-migrated to \(vmi.status?.migrationState?.targetState?.domainNamespace.map { "namespace \($0) " } ?? "")node \(vmi.status?.migrationState?.targetNode ?? "of the peer cluster") by a decentralized migration"
        var state = MigrationState()
        state.completed = true
        state.failed = false
        if vmi.status?.migrationState?.endTimestamp == nil { state.endTimestamp = Migration.timestamp() }
        final(&state)
        status.migrationState = state
        do {
            try await persistently("retirement of \(vmi.key)") { () async throws(APIError) in
                try await client.set(\.status, of: vmi, to: status)
            }
            logger.info("the VMI's guest left by a decentralized migration: Succeeded", metadata: ["vmi": "\(vmi.key)"])
        } catch {
            logger.error("could not mark a migrated VMI Succeeded", metadata: ["vmi": "\(vmi.key)", "error": "\(error)"])
        }
    }
}

extension DomainMapping {
    /// The destination XML of a decentralized migration: the source's migratable XML with each disk at the path the
    /// target published for its guest device (the target VM's own volumes), the console socket at the target's
    /// (`<runDirectory>/<target domain>.serial`), and the rest of the run directory moved as for any migration.
    /// Devices the target did not name keep their paths (and fail there with libvirt's reason).
    static func decentralizedDestinationXML(
        _ xml: String, disks: [String: String], serial: (from: String, to: String)?, from sourceRunDirectory: String,
        to targetRunDirectory: String
    ) -> String {
        var replacements: [(String, String)] = []
        var rest = Substring(xml)
        while let start = rest.range(of: "<disk "), let end = rest.range(of: "</disk>", range: start.upperBound..<rest.endIndex) {
            let element = rest[start.lowerBound..<end.upperBound]
            if let file = attribute("file", in: element), let device = attribute("dev", in: element),
                let path = disks[device], path != file
            {
                replacements.append((file, path))
            }
            rest = rest[end.upperBound...]
        }
        if let serial, serial.from != serial.to { replacements.append((serial.from, serial.to)) }
        var result = xml
        for (from, to) in replacements {
            result = result.replacingOccurrences(of: "'\(from)'", with: "'\(to)'")
                .replacingOccurrences(of: "\"\(from)\"", with: "\"\(to)\"")
        }
        return destinationXML(result, from: sourceRunDirectory, to: targetRunDirectory)
    }

    /// The value of the first `name='…'` (or `name="…"`) attribute in `element`.
    private static func attribute(_ name: String, in element: Substring) -> String? {
        for quote in ["'", "\""] {
            if let start = element.range(of: " \(name)=\(quote)"),
                let end = element.range(of: quote, range: start.upperBound..<element.endIndex)
            {
                return String(element[start.upperBound..<end.lowerBound])
            }
        }
        return nil
    }
}
