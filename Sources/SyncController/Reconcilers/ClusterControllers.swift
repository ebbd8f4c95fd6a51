import ClusterAPI
public import ControllerRuntime
import Foundation
public import Logging
public import ServiceLifecycle
public import StateMirror

/// The controller's reconcilers on the controller runtime: one shared informer per kind (its cache indexed for what
/// the reconcilers look up), one work queue per concern, and the event handlers that turn a change into the keys it
/// concerns — never a pass over the whole cluster. Reads come from the caches; each reconciler writes only its own
/// object's changes.
public struct ClusterControllers: Service {
    /// The names of the caches' indexes.
    enum Index {
        /// VMIs by `status.nodeName`; migrations by source and target node.
        static let node = "node"
        /// VMIs by the claims of their spec's volumes (`namespace/claim`).
        static let specClaim = "specClaim"
        /// VMIs waiting for a node (value `waiting`).
        static let unscheduled = "unscheduled"
        /// Migrations by their VMI (`namespace/vmiName`).
        static let vmi = "vmi"
        /// Migrations by phase.
        static let phase = "phase"
        /// Evacuation migrations by the node they drain.
        static let evacuation = "evacuation"
        /// Decentralized migrations by side and migrationID (`source/ID`, `target/ID`).
        static let migrationID = "migrationID"
    }

    let machines: Informer<VirtualMachine>
    let instances: Informer<VirtualMachineInstance>
    let migrations: Informer<VirtualMachineInstanceMigration>
    let nodes: Informer<Node>
    let dataVolumes: Informer<DataVolume>
    let classes: Informer<StorageClass>
    let configuration: Informer<KubeVirt>
    let configMaps: Informer<ConfigMap>

    public let virtualMachine: Controller<VirtualMachineReconciler>
    public let scheduling: Controller<SchedulingReconciler>
    public let instance: Controller<InstanceReconciler>
    public let nodeLifecycle: Controller<NodeLifecycleReconciler>
    public let migration: Controller<MigrationReconciler>
    public let evacuation: Controller<EvacuationReconciler>
    public let dataVolume: Controller<DataVolumeReconciler>
    public let decentralized: Controller<DecentralizedMigrationReconciler>
    /// Delivers this cluster's halves of decentralized migrations to their peers (absent without a dialer).
    public let outbox: Controller<MirrorOutbox>?
    /// What the sync endpoint hands a peer's calls to.
    public let syncReceiver: MirrorReceiver
    /// Decides the channels of the cluster's gateway (`--gateway-listen`).
    public let gateway: CrossClusterGateway
    /// Keeps `kubevirt-ca` and merges `kubevirt-external-ca` (absent without a `ClusterTrust`).
    public let trustBundle: Controller<TrustBundleReconciler>?
    /// Deletes objects whose owners are gone (owner references).
    public let garbageCollector: GarbageCollector

    private var informers: [any SharedInformer] {
        [machines, instances, migrations, nodes, dataVolumes, classes, configuration, configMaps]
    }
    private var controllers: [any RunnableController] {
        [virtualMachine, scheduling, instance, nodeLifecycle, migration, evacuation, dataVolume, decentralized]
            + (outbox.map { [$0] } ?? []) + (trustBundle.map { [$0] } ?? [])
    }
    /// Everything whose queue must be empty for the controllers to be quiet.
    private var queues: [any RunnableController] { controllers + [garbageCollector.controller] }

    /// The controllers' metrics (reconciles, queue depths, migration outcomes) are made here, from the metrics factory
    /// in force.
    /// `sync` says where peers reach this cluster's sync endpoint (none: decentralized migrations fail at once);
    /// `dialer` calls the peers' endpoints (none: nothing is delivered).
    public init(
        store: any ResourceStore, nodeGracePeriod: Duration = .seconds(40),
        sync: SyncSettings = SyncSettings(advertisedAddresses: []), dialer: SyncDialer? = nil,
        trust: ClusterTrust? = nil, logger: Logger = Logger(label: "vmsync.controllers")
    ) {
        let readiness = NodeReadiness(gracePeriod: nodeGracePeriod)
        // Every cache also answers the garbage collector's questions (by uid, by owner uid), so it watches none of
        // these kinds again.
        let machineCache = Cache<VirtualMachine>(indexes: GarbageCollector.indexes(for: VirtualMachine.self))
        let instanceIndexes: [String: Cache<VirtualMachineInstance>.IndexFunction] = [
            Index.node: { [$0.nodeName].compactMap { $0 } },
            Index.specClaim: { vmi in
                (vmi.spec.volumes ?? []).compactMap(\.claimName).map { "\(vmi.metadata.namespace ?? "default")/\($0)" }
            },
            Index.unscheduled: { SchedulingReconciler.awaitsNode($0) ? ["waiting"] : [] },
            DataVolumeReconciler.claimIndex: DataVolumeReconciler.claims,
        ]
        let instanceCache = Cache(
            indexes: instanceIndexes.merging(GarbageCollector.indexes(for: VirtualMachineInstance.self)) { own, _ in own
            })
        let migrationIndexes: [String: Cache<VirtualMachineInstanceMigration>.IndexFunction] = [
            Index.vmi: { [Self.vmiIndexValue(of: $0)] },
            Index.phase: { [$0.phase.rawValue] },
            Index.node: {
                Array(
                    Set(
                        [$0.status?.migrationState?.sourceNode, $0.status?.migrationState?.targetNode].compactMap { $0 }
                    ))
            },
            Index.evacuation: { [$0.metadata.labels?[Migration.evacuationNodeLabel]].compactMap { $0 } },
            Index.migrationID: { $0.migrationIDIndexValues },
        ]
        let migrationCache = Cache(
            indexes: migrationIndexes.merging(GarbageCollector.indexes(for: VirtualMachineInstanceMigration.self)) {
                own, _ in own
            })
        let nodeCache = Cache<Node>(indexes: GarbageCollector.indexes(for: Node.self))
        let dataVolumeCache = Cache<DataVolume>(indexes: GarbageCollector.indexes(for: DataVolume.self))
        let classCache = Cache<StorageClass>(indexes: GarbageCollector.indexes(for: StorageClass.self))
        let configurationCache = Cache<KubeVirt>(indexes: GarbageCollector.indexes(for: KubeVirt.self))
        let configMapCache = Cache<ConfigMap>(indexes: GarbageCollector.indexes(for: ConfigMap.self))
        let placement = Placement(readiness: readiness, dataVolumes: dataVolumeCache)

        func controller<R: Reconciler>(_ reconciler: R) -> Controller<R> {
            Controller(reconciler, logger: logger)
        }
        let virtualMachine = controller(
            VirtualMachineReconciler(store: store, machines: machineCache, instances: instanceCache, logger: logger))
        let scheduling = controller(
            SchedulingReconciler(
                store: store, instances: instanceCache, nodes: nodeCache, placement: placement, logger: logger))
        let instance = controller(
            InstanceReconciler(
                store: store, instances: instanceCache, nodes: nodeCache, migrations: migrationCache,
                dataVolumes: dataVolumeCache, classes: classCache,
                placement: placement))
        let nodeLifecycle = controller(
            NodeLifecycleReconciler(
                store: store, nodes: nodeCache, instances: instanceCache, readiness: readiness, logger: logger))
        let migration = controller(
            MigrationReconciler(
                store: store, migrations: migrationCache, instances: instanceCache, nodes: nodeCache,
                configuration: configurationCache,
                placement: placement, logger: logger))
        let evacuation = controller(
            EvacuationReconciler(
                store: store, nodes: nodeCache, instances: instanceCache, migrations: migrationCache, logger: logger))
        let dataVolume = controller(
            DataVolumeReconciler(
                store: store, dataVolumes: dataVolumeCache, instances: instanceCache, classes: classCache))
        (self.virtualMachine, self.scheduling, self.instance, self.nodeLifecycle) = (
            virtualMachine, scheduling, instance, nodeLifecycle
        )
        (self.migration, self.evacuation, self.dataVolume) = (migration, evacuation, dataVolume)
        let decentralized = controller(
            DecentralizedMigrationReconciler(
                store: store, migrations: migrationCache, instances: instanceCache, nodes: nodeCache,
                configuration: configurationCache, placement: placement, settings: sync, logger: logger))
        // Calls to peers wait up to 30 s each: the outbox has workers of its own so one silent peer does not hold up
        // the others.
        let outbox = dialer.map { dialer in
            Controller(
                MirrorOutbox(
                    store: store, migrations: migrationCache, instances: instanceCache, dialer: dialer, settings: sync,
                    logger: logger), workers: 4, logger: logger)
        }
        (self.decentralized, self.outbox) = (decentralized, outbox)
        let trustBundle = trust.map { trust in
            controller(TrustBundleReconciler(store: store, configMaps: configMapCache, trust: trust, logger: logger))
        }
        self.trustBundle = trustBundle
        gateway = CrossClusterGateway(migrations: migrationCache, instances: instanceCache, nodes: nodeCache)
        syncReceiver = MirrorReceiver(
            store: store, migrations: migrationCache, instances: instanceCache, logger: logger
        ) { key in
            decentralized.enqueue(key)
            outbox?.enqueue(key)
        }
        /// A decentralized migration's reconciler and outbox hear of it.
        @Sendable func decentralizedConcerns(_ keys: [ObjectKey]) {
            for key in keys where migrationCache[key]?.isDecentralized == true {
                decentralized.enqueue(key)
                outbox?.enqueue(key)
            }
        }
        let collectorQueue = WorkQueue<ObjectKey>()
        @Sendable func collect<R: Resource>(_ change: Informer<R>.Change) {
            GarbageCollector.observe(old: change.old?.metadata, new: change.new?.metadata, into: collectorQueue)
        }

        /// Keys of every object in `keys` into `controller`.
        @Sendable func enqueue<R: Reconciler>(_ keys: any Sequence<ObjectKey>, into controller: Controller<R>) {
            for key in keys { controller.enqueue(key) }
        }
        /// Migrations waiting for room or a target: what a freed place or a changed node may let go on.
        @Sendable func waitingMigrations() -> [ObjectKey] {
            [VirtualMachineInstanceMigration.Phase.pending, .scheduling].flatMap {
                migrationCache.keys(in: Index.phase, $0.rawValue)
            }
        }
        /// A drain in progress on `node` (or its condition still to clear) is told of changes of the VMIs on it.
        @Sendable func evacuationConcerns(_ node: String?) {
            guard let node, let object = nodeCache[ObjectKey(namespace: nil, name: node)],
                object.isDraining || object.status?.conditions[Migration.drainCondition] != nil
            else { return }
            evacuation.enqueue(object.key)
        }

        machines = Informer(source: store, cache: machineCache, logger: logger) { change in
            collect(change)
            virtualMachine.enqueue(change.key)
        }
        instances = Informer(source: store, cache: instanceCache, logger: logger) { change in
            collect(change)
            let key = change.key
            virtualMachine.enqueue(key)
            instance.enqueue(key)
            if let new = change.new, SchedulingReconciler.awaitsNode(new) { scheduling.enqueue(key) }
            // Memory freed on a node (the VMI left it, ended or went): waiting VMIs and migrations may fit now.
            if let old = change.old, let node = old.nodeName, old.status?.phase?.isFinal != true,
                change.new?.nodeName != node || change.new?.status?.phase?.isFinal == true
            {
                enqueue(instanceCache.keys(in: Index.unscheduled, "waiting"), into: scheduling)
                enqueue(
                    migrationCache.keys(in: Index.phase, VirtualMachineInstanceMigration.Phase.scheduling.rawValue),
                    into: migration)
            }
            enqueue(migrationCache.keys(in: Index.vmi, key.description), into: migration)
            decentralizedConcerns(Array(migrationCache.keys(in: Index.vmi, key.description)))
            for claim in Set([change.old, change.new].compactMap { $0 }.flatMap(DataVolumeReconciler.claims)) {
                let parts = claim.split(separator: "/", maxSplits: 1).map(String.init)
                dataVolume.enqueue(ObjectKey(namespace: parts[0], name: parts[1]))
            }
            // A VMI that runs on a node nobody hears from is Unknown.
            if let new = change.new, new.status?.phase == .running, let node = new.nodeName,
                let object = nodeCache[ObjectKey(namespace: nil, name: node)], !readiness.isReady(object)
            {
                nodeLifecycle.enqueue(object.key)
            }
            evacuationConcerns(change.old?.nodeName)
            if change.new?.nodeName != change.old?.nodeName { evacuationConcerns(change.new?.nodeName) }
        }
        let outcomes = MigrationOutcomeMetrics()
        migrations = Informer(source: store, cache: migrationCache, logger: logger) { change in
            collect(change)
            outcomes.record(change)
            migration.enqueue(change.key)
            if (change.new ?? change.old)?.isDecentralized == true {
                decentralized.enqueue(change.key)
                outbox?.enqueue(change.key)
            }
            let vmi = ObjectKey(namespace: change.key.namespace, name: (change.new ?? change.old)!.spec.vmiName)
            instance.enqueue(vmi)
            // A place taken or freed under the parallel limits: the waiting migrations may start, or say what they
            // wait for now.
            if change.old?.phase != change.new?.phase
                || change.new?.metadata.isDeleting != change.old?.metadata.isDeleting
            {
                enqueue(waitingMigrations(), into: migration)
            }
            for node in Set(
                [change.old, change.new].compactMap { $0?.metadata.labels?[Migration.evacuationNodeLabel] })
            {
                evacuation.enqueue(ObjectKey(namespace: nil, name: node))
            }
            evacuationConcerns(instanceCache[vmi]?.nodeName)
        }
        nodes = Informer(source: store, cache: nodeCache, logger: logger) { change in
            collect(change)
            let key = change.key
            nodeLifecycle.enqueue(key)
            evacuation.enqueue(key)
            // What scheduling reads of a node; a heartbeat alone changes none of it.
            func placementView(_ node: Node?) -> [AnyHashable?]? {
                node.map {
                    [$0.labels, $0.spec, $0.status?.allocatable, $0.status?.tunnelEndpoint, readiness.isReady($0)]
                }
            }
            guard placementView(change.old) != placementView(change.new) else { return }
            enqueue(instanceCache.keys(in: Index.unscheduled, "waiting"), into: scheduling)
            enqueue(instanceCache.keys(in: Index.node, key.name), into: instance)
            enqueue(waitingMigrations(), into: migration)
            enqueue(migrationCache.keys(in: Index.node, key.name), into: migration)
            if change.old?.labels != change.new?.labels || change.old == nil || change.new == nil {
                // LiveMigratable counts the nodes a VMI's rules match.
                enqueue(instanceCache.unordered.map(\.key), into: instance)
            }
        }
        dataVolumes = Informer(source: store, cache: dataVolumeCache, logger: logger) { change in
            collect(change)
            dataVolume.enqueue(change.key)
            let users = instanceCache.keys(in: Index.specClaim, change.key.description)
            enqueue(users, into: instance)
            enqueue(users.filter { instanceCache[$0].map(SchedulingReconciler.awaitsNode) ?? false }, into: scheduling)
        }
        classes = Informer(source: store, cache: classCache, logger: logger) { change in
            collect(change)
            // A class's directory and sharing decide every path and LiveMigratable: look at all again (classes change rarely).
            enqueue(dataVolumeCache.unordered.map(\.key), into: dataVolume)
            enqueue(instanceCache.unordered.map(\.key), into: instance)
        }
        configuration = Informer(source: store, cache: configurationCache, logger: logger) { change in
            collect(change)
            enqueue(waitingMigrations(), into: migration)
            // The feature gate may have gone.
            decentralizedConcerns(migrationCache.unordered.filter { !$0.phase.isFinal }.map(\.key))
        }
        configMaps = Informer(source: store, cache: configMapCache, logger: logger) { change in
            collect(change)
            if TrustBundleReconciler.concerns(change.key) { trustBundle?.enqueue(change.key) }
        }
        garbageCollector = GarbageCollector(
            store: store,
            shared: [
                .init(cache: machineCache, informer: machines), .init(cache: instanceCache, informer: instances),
                .init(cache: migrationCache, informer: migrations), .init(cache: nodeCache, informer: nodes),
                .init(cache: dataVolumeCache, informer: dataVolumes), .init(cache: classCache, informer: classes),
                .init(cache: configurationCache, informer: configuration),
                .init(cache: configMapCache, informer: configMaps),
            ],
            queue: collectorQueue, logger: logger)
    }

    /// The value the migration index `vmi` files a migration under.
    static func vmiIndexValue(of migration: VirtualMachineInstanceMigration) -> String {
        "\(migration.metadata.namespace ?? "default")/\(migration.spec.vmiName)"
    }

    /// Runs the informers and, once every one has listed, the controllers, until cancelled or the service group shuts
    /// down (reconciles in progress finish; no new key is handed out).
    public func run() async {
        await cancelWhenGracefulShutdown { await self.runUntilCancelled() }
    }

    private func runUntilCancelled() async {
        await withTaskGroup(of: Void.self) { group in
            for informer in informers { group.addTask { await informer.run() } }
            group.addTask { await garbageCollector.run() }
            group.addTask {
                await waitForSync()
                // The CA ConfigMaps are made when missing: nothing else would bring their key.
                trustBundle?.enqueue(TrustBundleReconciler.bundleKey)
                await withTaskGroup(of: Void.self) { controllers in
                    for controller in self.controllers { controllers.addTask { await controller.run() } }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Waits until every informer has listed, the garbage collector's own too.
    public func waitForSync() async {
        for informer in informers { await informer.waitForSync() }
        await garbageCollector.waitForSync()
    }

    /// Whether the informers have applied every change up to the given resourceVersions (by kind) and the queues are
    /// idle: what a caller that knows which writes happened (a benchmark counting them) waits for.
    public func isQuiet(after revisions: [String: Int64]) -> Bool {
        informers.allSatisfy { $0.hasSeen(revisions[$0.kindName] ?? 0) } && queues.allSatisfy(\.isIdle)
    }

    /// Waits until the controllers have nothing left to do: every informer has seen every object as the store holds
    /// it and every queue is idle, twice in a row (tests and benchmarks; the controllers themselves never wait so).
    public func settle(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        var quiet = 0
        while quiet < 2 {
            guard ContinuousClock.now < deadline else {
                throw APIError(.timeout, code: 504, "the controllers did not settle within \(timeout)")
            }
            var settled = queues.allSatisfy(\.isIdle)
            if settled {
                for informer in informers where try await !informer.caughtUp() {
                    settled = false
                    break
                }
            }
            settled = settled && queues.allSatisfy(\.isIdle)
            quiet = settled ? quiet + 1 : 0
            try await Task.sleep(for: .milliseconds(quiet == 0 ? 2 : 10))
        }
    }
}
