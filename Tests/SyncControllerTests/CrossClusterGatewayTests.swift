import ClusterAPI
import ControllerRuntime
import Foundation
import Testing

@testable import SyncController
@testable import TLSTransport

/// The gateway's decisions, from the caches the controller keeps: only the bound cluster's source node, only while the
/// migration runs and its target is ready, only to the node the target half names.
@Suite("Cross-cluster gateway routes")
struct CrossClusterGatewayTests {
    let uid = "7d1c-target"

    func gateway(phase: String = "TargetReady", targetReady: Bool = true, nodeAddress: String = "10.0.1.99:1")
        throws -> CrossClusterGateway
    {
        let migrations = Cache<VirtualMachineInstanceMigration>(indexes: [
            CollectedKind.uidIndex: { [$0.metadata.uid].compactMap { $0 } }
        ])
        let instances = Cache<VirtualMachineInstance>()
        migrations.record(written: [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": ["name": "in", "namespace": "default", "uid": .string(uid), "resourceVersion": "3"],
            "spec": ["receive": ["migrationID": "m-1"], "vmiName": "vm"],
            "status": ["phase": .string(phase), "synchronizationPeer": ["cluster": "alpha"]],
        ])
        var state: JSONValue = ["migrationUid": .string(uid), "sourceState": ["node": "a1"]]
        // The address in the half is not where the gateway goes: the node's own registration says.
        if targetReady {
            state["targetState"] = [
                "node": "b1", "nodeAddress": .string(nodeAddress), "domainReadyTimestamp": "2026-12-07T20:00:00Z",
            ]
        }
        let nodes = Cache<Node>()
        nodes.record(written: [
            "apiVersion": "v1", "kind": "Node", "metadata": ["name": "b1", "resourceVersion": "2"],
            "status": ["tunnelEndpoint": "10.0.1.12:7443"],
        ])
        instances.record(written: [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": ["name": "vm", "namespace": "default", "resourceVersion": "4"],
            "spec": ["domain": ["devices": [:]]],
            "status": ["phase": "WaitingForSync", "migrationState": state],
        ])
        #expect(migrations.count == 1 && instances.count == 1 && nodes.count == 1, "the fixtures decode")
        return CrossClusterGateway(migrations: migrations, instances: instances, nodes: nodes)
    }

    func peer(_ authority: CertificateAuthority, _ name: String, role: PeerRole = .node, imported: Bool) throws
        -> PeerIdentity
    {
        PeerIdentity(
            certificate: try authority.issue(LeafRequest(role: role, name: name)).certificate, imported: imported)
    }

    func reason(_ route: TunnelRoute) -> String? {
        if case .refuse(let reason) = route { return reason }
        return nil
    }

    @Test(
        "the bound cluster's source node is carried on to the target node's registered tunnel exit (not an address from a status), which must be that node"
    )
    func carried() throws {
        let alpha = try CertificateAuthority.create(cluster: "alpha")
        let beta = try CertificateAuthority.create(cluster: "beta")
        let provider = try TLSContextProvider(
            identity: try beta.issue(LeafRequest(role: .controller, name: "controller")),
            trust: TrustBundle([beta.certificate]))
        let route = try gateway().route(
            peer: peer(alpha, "a1", imported: true), channel: Migration.tunnelChannel(uid, "memory"), provider: provider
        )
        guard case .relay(let hop) = route else {
            Issue.record("not relayed: \(route)")
            return
        }
        #expect(hop.remote == .tcp(host: "10.0.1.12", port: 7443))
        #expect(hop.exitPolicy == PeerPolicy(allowedRoles: [.node], allowedNames: ["b1"]))
        #expect(hop.provider === provider)
    }

    @Test(
        "everyone and everything else is refused: the same answer to whoever is not the migration's source (nothing learnt about it), the reason to the source"
    )
    func refused() throws {
        let alpha = try CertificateAuthority.create(cluster: "alpha")
        let gamma = try CertificateAuthority.create(cluster: "gamma")
        let beta = try CertificateAuthority.create(cluster: "beta")
        let provider = try TLSContextProvider(
            identity: try beta.issue(LeafRequest(role: .controller, name: "controller")),
            trust: TrustBundle([beta.certificate]))
        let channel = Migration.tunnelChannel(uid, "libvirt")
        let source = try peer(alpha, "a1", imported: true)
        let cases: [(String, () throws -> TunnelRoute, String)] = [
            (
                "another node of the bound cluster",
                { try gateway().route(peer: peer(alpha, "a2", imported: true), channel: channel, provider: provider) },
                "this gateway carries no channel"
            ),
            (
                "a node of another cluster with the same name",
                { try gateway().route(peer: peer(gamma, "a1", imported: true), channel: channel, provider: provider) },
                "this gateway carries no channel"
            ),
            (
                "this cluster's own node of that name",
                { try gateway().route(peer: peer(beta, "a1", imported: false), channel: channel, provider: provider) },
                "this gateway carries no channel"
            ),
            (
                "the bound cluster's controller",
                {
                    try gateway().route(
                        peer: peer(alpha, "a1", role: .controller, imported: true), channel: channel, provider: provider
                    )
                }, "this gateway carries no channel"
            ),
            (
                "an unknown migration",
                {
                    try gateway().route(
                        peer: source, channel: Migration.tunnelChannel("other", "memory"), provider: provider)
                }, "this gateway carries no channel"
            ),
            (
                "no migration's stream",
                { try gateway().route(peer: source, channel: "usb/dev-1", provider: provider) },
                "this gateway carries no channel"
            ),
            (
                "a stream that is not one",
                { try gateway().route(peer: source, channel: "migration/\(uid)/console", provider: provider) },
                "this gateway carries no channel"
            ),
            (
                "a finished migration",
                { try gateway(phase: "Failed").route(peer: source, channel: channel, provider: provider) },
                "this gateway carries no channel"
            ),
            (
                "a target not ready",
                { try gateway(targetReady: false).route(peer: source, channel: channel, provider: provider) },
                "is not ready"
            ),
        ]
        for (what, route, expected) in cases {
            let refusal = reason(try route())
            #expect(refusal?.contains(expected) == true, "\(what): \(refusal ?? "carried")")
        }
    }
}
