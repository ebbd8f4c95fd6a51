public import ClusterAPI
public import ControllerRuntime

/// DataVolume phases from what the nodes report in their VMIs' `volumeStatus`: Succeeded (with the node a local image
/// is on and where the image is) once a node made the image, else WaitForFirstConsumer or Pending. Keyed by DataVolume;
/// reads only its caches.
public struct DataVolumeReconciler: Reconciler {
    public let name = "datavolume"
    /// The VMI index by the claims their volumeStatus reports (`namespace/claim`).
    static let claimIndex = "volumeStatusClaim"

    let store: any ResourceStore
    let dataVolumes: Cache<DataVolume>
    let instances: Cache<VirtualMachineInstance>
    let classes: Cache<StorageClass>

    /// The claims a VMI's volumeStatus reports, as `namespace/claim` (the index `claimIndex` files VMIs under).
    @Sendable static func claims(_ vmi: VirtualMachineInstance) -> [String] {
        (vmi.status?.volumeStatus ?? []).compactMap { entry in
            entry.persistentVolumeClaimInfo?.claimName.map { "\(vmi.metadata.namespace ?? "default")/\($0)" }
        }
    }

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let dataVolume = dataVolumes[key] else { return .done }
        var changed = dataVolume
        var status = dataVolume.status ?? DataVolume.Status()
        let users = instances.objects(in: Self.claimIndex, "\(key.namespace ?? "default")/\(key.name)")
        let report = users.lazy.compactMap { vmi -> (VirtualMachineInstance.VolumeStatus, String?)? in
            guard
                let entry = vmi.status?.volumeStatus?.first(where: {
                    $0.persistentVolumeClaimInfo?.claimName == key.name
                })
            else { return nil }
            return (entry, vmi.nodeName)
        }.first
        if let (entry, node) = report {
            status.phase = "Succeeded"
            status.progress = "100.0%"
            // A local volume is where its VMI runs (it moves with a migration that copied it).
            if entry.persistentVolumeClaimInfo?.shared != true, let node { status.nodeName = node }
            // Where the image is follows from its StorageClass; the path a node reports is not taken on its word
            // (agents delete what this says).
            if let directory = dataVolume.storageClass(in: classes.all)?.directory {
                status.path = Resources.imagePath(
                    directory: directory, namespace: key.namespace ?? "default", name: key.name)
            }
        } else if status.phase == nil {
            let source = dataVolume.spec.source
            status.phase = source?.blank != nil || source?.http != nil ? "WaitForFirstConsumer" : "Pending"
        }
        changed.status = status
        guard let patch = dataVolume.patch(to: changed).status else { return .done }
        dataVolumes.record(
            written: try await store.patch(
                Kinds.dataVolume, namespace: key.namespace, name: key.name, mergePatch: patch, subresource: .status))
        return .done
    }
}
