public import ClusterAPI
public import ControllerRuntime
public import Logging

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

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let dataVolume = dataVolumes[key] else { return .done }
        var changed = dataVolume
        var status = dataVolume.status ?? DataVolume.Status()
        let users = instances.objects(in: Self.claimIndex, "\(key.namespace ?? "default")/\(key.name)")
        let report = users.lazy.compactMap { vmi -> (VirtualMachineInstance.VolumeStatus, String?)? in
            guard let entry = vmi.status?.volumeStatus?.first(where: { $0.persistentVolumeClaimInfo?.claimName == key.name }) else { return nil }
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
                status.path = Resources.imagePath(directory: directory, namespace: key.namespace ?? "default", name: key.name)
            }
        } else if status.phase == nil {
            let source = dataVolume.spec.source
            status.phase = source?.blank != nil || source?.http != nil ? "WaitForFirstConsumer" : "Pending"
        }
        changed.status = status
        guard let patch = dataVolume.patch(to: changed).status else { return .done }
        _ = try await store.patch(Kinds.dataVolume, namespace: key.namespace, name: key.name, mergePatch: patch, subresource: .status)
        return .done
    }
}

/// The DataVolume controller: informers on DataVolumes, VMIs and StorageClasses feeding one queue of DataVolume keys.
public struct DataVolumeController: Sendable {
    let dataVolumes: Informer<DataVolume>
    let instances: Informer<VirtualMachineInstance>
    let classes: Informer<StorageClass>
    public let controller: Controller<DataVolumeReconciler>

    public init(store: any ResourceStore, logger: Logger = Logger(label: "vmsync.datavolume")) {
        let queue = WorkQueue<ObjectKey>()
        let dataVolumes = Informer<DataVolume>(source: store, logger: logger) { change in queue.add(change.key) }
        self.dataVolumes = dataVolumes
        instances = Informer<VirtualMachineInstance>(
            source: store, indexes: [DataVolumeReconciler.claimIndex: Self.claims], logger: logger
        ) { change in
            for claim in Set([change.old, change.new].compactMap { $0 }.flatMap(Self.claims)) {
                let parts = claim.split(separator: "/", maxSplits: 1).map(String.init)
                queue.add(ObjectKey(namespace: parts[0], name: parts[1]))
            }
        }
        classes = Informer<StorageClass>(source: store, logger: logger) { _ in
            // A class's directory decides every path: look at all DataVolumes again (classes change rarely).
            for dataVolume in dataVolumes.cache.all { queue.add(dataVolume.key) }
        }
        controller = Controller(
            DataVolumeReconciler(store: store, dataVolumes: dataVolumes.cache, instances: instances.cache, classes: classes.cache),
            queue: queue, logger: logger)
    }

    /// The claims a VMI's volumeStatus reports, as `namespace/claim`.
    @Sendable static func claims(_ vmi: VirtualMachineInstance) -> [String] {
        (vmi.status?.volumeStatus ?? []).compactMap { entry in
            entry.persistentVolumeClaimInfo?.claimName.map { "\(vmi.metadata.namespace ?? "default")/\($0)" }
        }
    }

    /// Runs the informers and, once they have listed, the reconciler, until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await dataVolumes.run() }
            group.addTask { await instances.run() }
            group.addTask { await classes.run() }
            group.addTask {
                await dataVolumes.waitForSync()
                await instances.waitForSync()
                await classes.waitForSync()
                await controller.run()
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Waits until every informer has listed (tests, and whatever must not act on an empty cache).
    public func waitForSync() async {
        await dataVolumes.waitForSync()
        await instances.waitForSync()
        await classes.waitForSync()
    }
}
