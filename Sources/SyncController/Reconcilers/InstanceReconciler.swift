public import ClusterAPI
public import ControllerRuntime
import Logging

/// What the controller keeps on each VMI besides its placement, keyed by VMI: the finalizer of a deleted VMI released
/// once its node reported the domain gone (or it never reached a Ready node), the `LiveMigratable` condition with the
/// seed's reasons, and the MIGRATION column (`printableMigration`) from the VMI's migrations.
public struct InstanceReconciler: Reconciler {
    public let name = "instance"
    let store: any ResourceStore
    let instances: Cache<VirtualMachineInstance>
    let nodes: Cache<Node>
    let migrations: Cache<VirtualMachineInstanceMigration>
    let dataVolumes: Cache<DataVolume>
    let classes: Cache<StorageClass>
    let placement: Placement

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let vmi = instances[key] else { return .done }
        if vmi.metadata.isDeleting {
            try await releaseFinalizer(vmi)
            return .done
        }
        var changed = vmi
        var status = vmi.status ?? VirtualMachineInstance.Status()
        if status.phase?.isFinal != true {
            let (migratable, reason, message) = migratability(vmi)
            status.conditions.set(Condition("LiveMigratable", migratable, reason: reason, message: message))
        }
        status.printableMigration = printableMigration(of: key)
        changed.status = status
        try await store.write(changed, from: vmi, cache: instances)
        return .done
    }

    /// A deleted VMI keeps its finalizer until its node reported the domain gone (or it never reached a node, or the
    /// node is not Ready).
    private func releaseFinalizer(_ vmi: VirtualMachineInstance) async throws(APIError) {
        guard vmi.metadata.has(finalizer: Resources.vmiFinalizer) else { return }
        let phase = vmi.status?.phase
        let node = vmi.nodeName.flatMap { nodes[ObjectKey(namespace: nil, name: $0)] }
        guard
            phase?.isFinal == true || vmi.nodeName == nil || phase == .pending
                || !(node.map { placement.readiness.isReady($0) } ?? false)
        else { return }
        var changed = vmi
        changed.metadata.remove(finalizer: Resources.vmiFinalizer)
        try await store.write(changed, from: vmi, cache: instances)
    }

    /// The LiveMigratable condition: False with the seed's reason when a disk, a device or the scheduling rules keep
    /// the VMI on its node.
    func migratability(_ vmi: VirtualMachineInstance) -> (Bool, String, String) {
        let spec = vmi.spec
        if let disk = (spec.domain?.devices?.disks ?? []).first(where: { $0.cdrom != nil }) {
            return (false, "DisksNotLiveMigratable", "disk \"\(disk.name)\" is a CD-ROM")
        }
        for volume in spec.volumes ?? [] {
            if volume.containerDisk != nil {
                return (false, "DisksNotLiveMigratable", "volume \"\(volume.name)\" is a container disk")
            }
            guard let claim = volume.claimName,
                let dataVolume = dataVolumes[ObjectKey(namespace: vmi.metadata.namespace ?? "default", name: claim)]
            else { continue }
            let storageClass = dataVolume.storageClass(in: classes.all)
            let modes = dataVolume.storage?.accessModes ?? []
            if storageClass?.shared != true && modes.contains("ReadWriteOnce") {
                return (
                    false, "DisksNotLiveMigratable",
                    "volume \"\(volume.name)\" is ReadWriteOnce on storage class \"\(storageClass?.metadata.name ?? "?")\", which is not shared"
                )
            }
        }
        if !(spec.domain?.devices?.hostDevices ?? []).isEmpty || !(spec.domain?.devices?.gpus ?? []).isEmpty {
            return (false, "HostDeviceNotLiveMigratable", "the VMI passes host devices (PCI or vGPU) through")
        }
        if let hostname = spec.nodeSelector?[Resources.hostnameLabel] {
            return (
                false, "NodeSelectorBindsOneNode",
                "nodeSelector \(Resources.hostnameLabel)=\(hostname) binds the VMI to one node"
            )
        }
        let all = nodes.all
        let fitting = all.filter { placement.unfit(vmi, on: $0, ignoreReadiness: true, checkVolumes: false) == nil }
        if fitting.count <= 1 && all.count > 1 {
            return (
                false, "SchedulingRulesMatchOneNode",
                "the VMI's scheduling rules (nodeSelector, affinity, CPU model) match only \(fitting.first?.name ?? "no node")"
            )
        }
        return (true, "Migratable", "")
    }

    /// "Migrating" while a migration of the VMI runs, "Pending migration" while one waits, nil otherwise.
    private func printableMigration(of key: ObjectKey) -> String? {
        let phases = Set(migrations.objects(in: ClusterControllers.Index.vmi, key.description).map(\.phase))
        if !phases.isDisjoint(with: [.running, .targetReady, .preparingTarget, .scheduled]) { return "Migrating" }
        if !phases.isDisjoint(with: [.pending, .scheduling]) { return "Pending migration" }
        return nil
    }
}
