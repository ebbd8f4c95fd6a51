public import ClusterAPI
public import ControllerRuntime
public import TLSTransport

/// The cluster's one port for other clusters' migrations (the KubeVirt object's `crossClusterGateway`, served by
/// `sync-controller --gateway-listen`): a tunnel exit whose channels are decided from what the cluster knows when each
/// opens. A migration's stream is carried on to the target node's tunnel exit — over mutual TLS again, as this
/// cluster's controller — only for the source node the migration's mirror names, of the cluster the migration is
/// bound to, while the migration runs and its target is ready; the next hop is the tunnel exit the target node
/// registered (its Node's `tunnelEndpoint`), never an address taken from a status. Nothing is registered ahead, so a
/// controller restarted mid-migration takes new streams as before (the streams it carried end with it). A peer that is
/// not the migration's source learns nothing about it: every such refusal reads the same.
public struct CrossClusterGateway: Sendable {
    let migrations: Cache<VirtualMachineInstanceMigration>
    let instances: Cache<VirtualMachineInstance>
    let nodes: Cache<Node>

    /// The route for `peer` opening `channel`; the next hop is dialled with `provider` (the controller's identity).
    public func route(peer: PeerIdentity, channel: String, provider: TLSContextProvider) -> TunnelRoute {
        let closed = TunnelRoute.refuse("this gateway carries no channel \"\(channel)\" for \(peer)")
        guard let (uid, _) = Migration.parseTunnelChannel(channel),
            let vmim = migrations.objects(in: CollectedKind.uidIndex, uid).first(where: { $0.spec.receive != nil }),
            !vmim.phase.isFinal, let cluster = vmim.status?.synchronizationPeer?.cluster
        else { return closed }
        let vmi = instances[ObjectKey(namespace: vmim.key.namespace, name: vmim.spec.vmiName)]
        guard let state = vmi?.status?.migrationState, state.migrationUid == uid,
            let source = state.sourceState?.node ?? state.sourceNode,
            PeerPolicy(allowedRoles: [.node], allowedNames: [source], cluster: cluster).admits(peer)
        else { return closed }
        // The migration's own source node from here on: it may know why.
        guard let node = state.targetState?.node, state.targetState?.domainReadyTimestamp != nil,
            let address = nodes[ObjectKey(namespace: nil, name: node)]?.status?.tunnelEndpoint,
            let next = try? Endpoint(parsing: address)
        else { return .refuse("the target of migration \(uid) is not ready") }
        return .relay(
            TunnelHop(
                remote: next, provider: provider, exitPolicy: PeerPolicy(allowedRoles: [.node], allowedNames: [node])))
    }
}
