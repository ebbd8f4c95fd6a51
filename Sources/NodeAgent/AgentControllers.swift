import ClusterAPI
import ClusterClient
import ControllerRuntime
import Logging

/// The node agent on the controller runtime: informers on the VMIs on this node (a field selector on
/// `status.nodeName`), on the migrations from and to it, on DataVolumes (whose deletion removes their images
/// here) and on the KubeVirt configuration (CPU model, migration settings); a work queue of VMIs and one of migrations; libvirt's lifecycle events enqueue the domain's VMI. No loop
/// polls the API.
struct AgentControllers: Sendable {
    let instances: Informer<VirtualMachineInstance>
    let outgoing: Informer<VirtualMachineInstanceMigration>
    let incoming: Informer<VirtualMachineInstanceMigration>
    let dataVolumes: Informer<DataVolume>
    let kubeVirt: Informer<KubeVirt>
    /// The cluster's trust bundle (`kubevirt-ca`): CAs imported from other clusters reach this node's tunnels.
    let trustBundle: Informer<ConfigMap>
    let instanceController: Controller<InstanceSync>
    let migrationController: Controller<MigrationSync>
    let senders = Senders()
    let agent: NodeAgent

    init(agent: NodeAgent, client: APIClient, node: String, logger: Logger) throws(APIError) {
        let source = ClusterSource(client: client)
        // A node waits for what it cannot do yet (the controller restarting, a StorageClass to come) at most half a
        // minute between tries.
        let backoff = WorkQueue<ObjectKey>.Backoff(base: .milliseconds(200), maximum: .seconds(30))
        let instanceController = Controller(
            InstanceSync(agent: agent), queue: WorkQueue(backoff: backoff), logger: logger)
        let migrationController = Controller(
            MigrationSync(agent: agent), queue: WorkQueue(backoff: backoff), logger: logger)
        self.agent = agent
        self.instanceController = instanceController
        self.migrationController = migrationController
        instances = Informer(
            source: source, cache: agent.instances,
            selection: Selection(fields: try FieldSelector("status.nodeName=\(node)")), logger: logger
        ) { change in
            instanceController.enqueue(change.key)
        }
        @Sendable func migrationChanged(_ change: Informer<VirtualMachineInstanceMigration>.Change) async {
            if change.new == nil, let uid = change.old?.metadata.uid {
                await agent.migrationGone(uid: uid)
            } else {
                migrationController.enqueue(change.key)
            }
            // A VMI's migration bears on how its domain is treated here (leaving, aborting, coming back).
            if let migration = change.new ?? change.old {
                instanceController.enqueue(ObjectKey(namespace: change.key.namespace, name: migration.spec.vmiName))
            }
        }
        outgoing = Informer(
            source: source, cache: agent.outgoingMigrations,
            selection: Selection(fields: try FieldSelector("status.migrationState.sourceNode=\(node)")), logger: logger,
            handler: migrationChanged)
        incoming = Informer(
            source: source, cache: agent.incomingMigrations,
            selection: Selection(fields: try FieldSelector("status.migrationState.targetNode=\(node)")), logger: logger,
            handler: migrationChanged)
        dataVolumes = Informer(source: source, logger: logger) { change in
            if change.new == nil, let gone = change.old { await agent.volumes.remove(gone) }
        }
        kubeVirt = Informer(
            source: source, cache: agent.kubeVirts, selection: Selection(namespace: KubeVirt.namespace), logger: logger
        ) { _ in }
        trustBundle = Informer(source: source, selection: Selection(namespace: ConfigMap.caNamespace), logger: logger) {
            change in
            guard change.key.name == ConfigMap.caBundleName, let bundle = change.new else { return }
            await agent.followTrust(bundle)
        }
    }

    /// Runs the informers, and once they have listed the controllers and the senders, until cancelled.
    func run() async {
        await agent.setSenders(senders)
        await withTaskGroup(of: Void.self) { group in
            for informer in [instances, outgoing, incoming, dataVolumes, kubeVirt, trustBundle] as [any SharedInformer] {
                group.addTask { await informer.run() }
            }
            group.addTask { await senders.run() }
            group.addTask {
                await waitForSync()
                await agent.afterSync()
                await withTaskGroup(of: Void.self) { controllers in
                    controllers.addTask { await instanceController.run() }
                    controllers.addTask { await migrationController.run() }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    func waitForSync() async {
        for informer in [instances, outgoing, incoming, dataVolumes, kubeVirt] as [any SharedInformer] {
            await informer.waitForSync()
        }
    }

    /// libvirt says `domain` changed: its VMI is looked at, or, if no VMI here has it, whether it is an orphan.
    func domainChanged(_ domain: String) async {
        guard let separator = domain.firstIndex(of: "_") else { return }
        let key = ObjectKey(
            namespace: String(domain[..<separator]), name: String(domain[domain.index(after: separator)...]))
        if agent.instances[key] != nil {
            instanceController.enqueue(key)
        } else if let migration = await agent.incomingMigration(forDomain: domain) {
            // A guest arriving here whose VMI is not this node's yet (a decentralized migration's): its migration
            // claims it as soon as libvirt runs it.
            migrationController.enqueue(migration)
        } else {
            await agent.sweepOrphans()
        }
    }
}

/// The VMIs on this node, one at a time.
struct InstanceSync: Reconciler {
    let name = "agent-instance"
    let agent: NodeAgent
    func reconcile(_ key: ObjectKey) async throws -> ReconcileResult { try await agent.syncInstance(key) }
}

/// The migrations this node takes part in.
struct MigrationSync: Reconciler {
    let name = "agent-migration"
    let agent: NodeAgent
    func reconcile(_ key: ObjectKey) async throws -> ReconcileResult { await agent.syncMigration(key) }
}

/// Outgoing migrations run as child tasks of the agent's controllers (never as tasks nobody owns): `send` hands one
/// over, `run` runs each until it ends, and on cancellation waits for them (their jobs aborted first).
final class Senders: Sendable {
    typealias Work = @Sendable () async -> Void
    private let stream: AsyncStream<Work>
    private let continuation: AsyncStream<Work>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Work.self)
    }

    func send(_ work: @escaping Work) { continuation.yield(work) }

    func run() async {
        await withDiscardingTaskGroup { group in
            for await work in stream { group.addTask { await work() } }
        }
    }
}
