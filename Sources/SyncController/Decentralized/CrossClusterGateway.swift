public import ClusterAPI
public import ControllerRuntime
public import TLSTransport

/// The cluster's one port for other clusters' migrations (the KubeVirt object's `crossClusterGateway`, served by
/// `sync-controller --gateway-listen`): a tunnel exit whose channels are decided from what the cluster knows when each
/// opens. A migration's stream is carried on to the target node's tunnel exit — over mutual TLS again, as this
/// cluster's controller — only for the source node the migration's mirror names, of the cluster the migration is
/// bound to, while the migration runs and its target is ready. Nothing is registered ahead, so a controller restarted
/// mid-migration carries the streams as before.
public struct CrossClusterGateway: Sendable {
    let migrations: Cache<VirtualMachineInstanceMigration>
    let instances: Cache<VirtualMachineInstance>

    /// The route for `peer` opening `channel`; the next hop is dialled with `provider` (the controller's identity).
    public func route(peer: PeerIdentity, channel: String, provider: TLSContextProvider) -> TunnelRoute {
        guard let (uid, _) = Migration.parseTunnelChannel(channel) else {
            return .refuse("channel \"\(channel)\" is no migration's stream")
        }
        guard
            let vmim = migrations.objects(in: CollectedKind.uidIndex, uid).first(where: { $0.spec.receive != nil }),
            !vmim.phase.isFinal
        else { return .refuse("this cluster receives no running migration \(uid)") }
        guard let cluster = vmim.status?.synchronizationPeer?.cluster else {
            return .refuse("migration \(uid) is bound to no peer cluster yet")
        }
        let vmi = instances[ObjectKey(namespace: vmim.key.namespace, name: vmim.spec.vmiName)]
        guard let state = vmi?.status?.migrationState, state.migrationUid == uid,
            let node = state.targetState?.node, let address = state.targetState?.nodeAddress,
            let next = try? Endpoint(parsing: address)
        else { return .refuse("the target of migration \(uid) is not ready") }
        guard let source = state.sourceState?.node ?? state.sourceNode,
            PeerPolicy(allowedRoles: [.node], allowedNames: [source], cluster: cluster).admits(peer)
        else {
            return .refuse(
                "\(peer) is not the source node of migration \(uid) (node \(state.sourceState?.node ?? "?") of cluster \(cluster))"
            )
        }
        return .relay(
            TunnelHop(
                remote: next, provider: provider, exitPolicy: PeerPolicy(allowedRoles: [.node], allowedNames: [node])))
    }
}
