import ClusterAPI
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import StateMirror
import TLSTransport
import TestSupport
import Testing

/// A receiver that records what reached it and answers as told: the endpoint's own behaviour (identity, bounds, the
/// mapping of refusals) is what these tests check; the controller's receiver is tested against the store.
final class RecordingReceiver: SyncReceiver {
    enum Call: Hashable {
        case source(PeerStatus, SyncPeer)
        case target(PeerStatus, SyncPeer)
        case cancel(String, SyncPeer)
    }

    let calls = NIOLockedValueBox<[Call]>([])
    let refusal = NIOLockedValueBox<SyncRefusal?>(nil)
    /// When set, only these migrationIDs are known; others are not found, in KubeVirt's words.
    let known: Set<String>?

    init(known: Set<String>? = nil) { self.known = known }

    func applySourceStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String {
        calls.withLockedValue { $0.append(.source(status, peer)) }
        try check(status.migrationID, side: "target")
        return "success"
    }

    func applyTargetStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String {
        calls.withLockedValue { $0.append(.target(status, peer)) }
        try check(status.migrationID, side: "source")
        return "success"
    }

    private func check(_ migrationID: String, side: String) throws(SyncRefusal) {
        if let refusal = refusal.withLockedValue({ $0 }) { throw refusal }
        if let known, !known.contains(migrationID) {
            throw SyncRefusal(.notFound, "\(side): unable to locate VMI for migrationID \(migrationID)")
        }
    }

    func cancelMigration(uid migrationUID: String, from peer: SyncPeer) async throws(SyncRefusal) -> String {
        calls.withLockedValue { $0.append(.cancel(migrationUID, peer)) }
        if let refusal = refusal.withLockedValue({ $0 }) { throw refusal }
        return "migration canceled"
    }
}

/// Two clusters' PKIs, minted for a test.
struct TwoClusters {
    let a: CertificateAuthority
    let b: CertificateAuthority

    init() throws {
        a = try CertificateAuthority.create(cluster: "cluster-a")
        b = try CertificateAuthority.create(cluster: "cluster-b")
    }

    /// A provider with `identity` trusting `trusted`.
    static func provider(_ identity: CertifiedKey, trusting trusted: [CertificateAuthority]) throws
        -> TLSContextProvider
    {
        try TLSContextProvider(identity: identity, trust: TrustBundle(trusted.map(\.certificate)))
    }

    static func syncServer(of authority: CertificateAuthority, now: Date = Date()) throws -> CertifiedKey {
        try authority.issue(
            LeafRequest(role: .syncServer, name: "sync", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]), now: now)
    }

    static func syncClient(of authority: CertificateAuthority, now: Date = Date()) throws -> CertifiedKey {
        try authority.issue(LeafRequest(role: .syncClient, name: "sync"), now: now)
    }
}

/// An endpoint and a dialer running for one test, stopped at its end.
struct SyncPair {
    let endpoint: SyncEndpoint
    let dialer: SyncDialer
    let address: String
    let refusedPeers: NIOLockedValueBox<[TransportError]>

    static func with<T: Sendable>(
        server: TLSContextProvider, client: TLSContextProvider, receiver: RecordingReceiver,
        _ body: @Sendable (SyncPair) async throws -> T
    ) async throws -> T {
        var logger = Logger(label: "test.sync")
        logger.logLevel = .critical
        let refused = NIOLockedValueBox<[TransportError]>([])
        let endpoint = try SyncEndpoint(
            host: "127.0.0.1", port: 0, provider: server, receiver: receiver, logger: logger
        ) { error in refused.withLockedValue { $0.append(error) } }
        let dialer = SyncDialer(provider: client, logger: logger, callTimeout: .seconds(10))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await endpoint.run() }
            group.addTask { try await dialer.run() }
            let result: Result<T, any Error>
            do {
                let address = try await endpoint.boundAddress
                result = .success(
                    try await body(
                        SyncPair(endpoint: endpoint, dialer: dialer, address: address, refusedPeers: refused)))
            } catch {
                result = .failure(error)
            }
            // Gracefully: cancelling NIO's server with a connection still queued traps.
            endpoint.shutdown()
            dialer.shutdown()
            try await group.waitForAll()
            return try result.get()
        }
    }
}

@Suite("Sync endpoint: KubeVirt's Synchronize service over mutual TLS")
struct SyncEndpointTests {
    static func status(phase: VirtualMachineInstance.Phase = .running, node: String = "node-a")
        -> VirtualMachineInstance.Status
    {
        var status = VirtualMachineInstance.Status()
        status.phase = phase
        status.nodeName = node
        var state = MigrationState()
        var source = MigrationState.SourceState()
        source.node = node
        source.migrationUID = "uid-source"
        state.sourceState = source
        status.migrationState = state
        return status
    }

    @Test("a peer's status reaches the receiver with the peer's cluster, CA and address; each method answers")
    func roundTrip() async throws {
        let pki = try TwoClusters()
        let receiver = RecordingReceiver()
        let server = try TwoClusters.provider(TwoClusters.syncServer(of: pki.b), trusting: [pki.b, pki.a])
        let client = try TwoClusters.provider(TwoClusters.syncClient(of: pki.a), trusting: [pki.a, pki.b])
        try await SyncPair.with(server: server, client: client, receiver: receiver) { pair in
            let sent = Self.status()
            let answer = try await pair.dialer.sendSourceStatus(to: pair.address, migrationID: "mig-1", status: sent)
            #expect(answer == "success")
            #expect(
                try await pair.dialer.sendTargetStatus(to: pair.address, migrationID: "mig-1", status: sent)
                    == "success")
            #expect(
                try await pair.dialer.cancelMigration(at: pair.address, migrationUID: "uid-9")
                    == "migration canceled")
            let calls = receiver.calls.withLockedValue { $0 }
            try #require(calls.count == 3)
            guard case .source(let status, let peer) = calls[0], case .target(_, let again) = calls[1],
                case .cancel(let uid, _) = calls[2]
            else {
                Issue.record("calls arrived as \(calls)")
                return
            }
            #expect(status.migrationID == "mig-1")
            #expect(status.status == sent)
            #expect(status.envelope["migrationState"]?["sourceState"]?["node"] == "node-a")
            #expect(peer.cluster == "cluster-a")
            #expect(peer.caFingerprint == PEM.fingerprint(pki.a.certificate))
            #expect(peer.host == "127.0.0.1")
            #expect(again == peer)
            #expect(uid == "uid-9")
        }
    }

    @Test("the receiver's refusals reach the caller with their gRPC code and words")
    func refusalsTravel() async throws {
        let pki = try TwoClusters()
        let receiver = RecordingReceiver()
        let server = try TwoClusters.provider(TwoClusters.syncServer(of: pki.b), trusting: [pki.b, pki.a])
        let client = try TwoClusters.provider(TwoClusters.syncClient(of: pki.a), trusting: [pki.a, pki.b])
        try await SyncPair.with(server: server, client: client, receiver: receiver) { pair in
            for (code, words) in [
                (SyncRefusal.Code.notFound, "target: unable to locate VMI for migrationID nope"),
                (.permissionDenied, "migrationID nope is synchronized with cluster \"cluster-c\""),
            ] {
                receiver.refusal.withLockedValue { $0 = SyncRefusal(code, words) }
                do throws(SyncCallError) {
                    _ = try await pair.dialer.sendSourceStatus(
                        to: pair.address, migrationID: "nope", status: Self.status())
                    Issue.record("a refused call returned")
                } catch {
                    #expect(error.kind == .refused(code))
                    #expect(error.description.contains(words), "\(error)")
                }
            }
        }
    }

    @Test(
        "refused handshakes: a client whose CA is not imported, an expired client certificate, a client without the sync client CN, a server without the sync server CN"
    )
    func identities() async throws {
        let pki = try TwoClusters()
        let receiver = RecordingReceiver()
        let longAgo = Date().addingTimeInterval(-30 * 86_400)
        let cases:
            [(server: TLSContextProvider, client: TLSContextProvider, serverSays: String?, clientSays: String?)] =
                [
                    // Cluster b never imported cluster a's CA.
                    (
                        try TwoClusters.provider(TwoClusters.syncServer(of: pki.b), trusting: [pki.b]),
                        try TwoClusters.provider(TwoClusters.syncClient(of: pki.a), trusting: [pki.a, pki.b]),
                        "which is not in the trust bundle", nil
                    ),
                    // The client's sync certificate expired (issued 30 days ago, valid for the default leaf lifetime).
                    (
                        try TwoClusters.provider(TwoClusters.syncServer(of: pki.b), trusting: [pki.b, pki.a]),
                        try TwoClusters.provider(
                            TwoClusters.syncClient(of: pki.a, now: longAgo), trusting: [pki.a, pki.b]),
                        "expired", nil
                    ),
                    // A node certificate of the server's own cluster is not the sync client.
                    (
                        try TwoClusters.provider(TwoClusters.syncServer(of: pki.b), trusting: [pki.b, pki.a]),
                        try TwoClusters.provider(
                            pki.b.issue(LeafRequest(role: .node, name: "node-b1")), trusting: [pki.a, pki.b]),
                        "role node", nil
                    ),
                    // The server presents a controller certificate, not KubeVirt's sync server identity.
                    (
                        try TwoClusters.provider(
                            pki.b.issue(LeafRequest(role: .controller, name: "controller", ipAddresses: ["127.0.0.1"])),
                            trusting: [pki.b, pki.a]),
                        try TwoClusters.provider(TwoClusters.syncClient(of: pki.b), trusting: [pki.b]),
                        nil, "role controller"
                    ),
                ]
        for (index, item) in cases.enumerated() {
            try await SyncPair.with(server: item.server, client: item.client, receiver: receiver) { pair in
                do throws(SyncCallError) {
                    _ = try await pair.dialer.sendSourceStatus(
                        to: pair.address, migrationID: "mig-\(index)", status: Self.status())
                    Issue.record("case \(index): the call went through")
                } catch {
                    #expect(error.kind == .unreachable, "case \(index): \(error)")
                    if let clientSays = item.clientSays {
                        #expect(error.description.contains(clientSays), "case \(index): \(error)")
                    }
                }
                if let serverSays = item.serverSays {
                    let refused = pair.refusedPeers.withLockedValue { $0 }
                    #expect(
                        refused.contains { $0.message.contains(serverSays) },
                        "case \(index): the server said \(refused)"
                    )
                }
            }
        }
        #expect(receiver.calls.withLockedValue { $0 }.isEmpty)
    }

    @Test("an oversized status is refused before it is parsed, and the endpoint keeps serving")
    func oversized() async throws {
        let pki = try TwoClusters()
        let receiver = RecordingReceiver()
        let server = try TwoClusters.provider(TwoClusters.syncServer(of: pki.b), trusting: [pki.b, pki.a])
        let client = try TwoClusters.provider(TwoClusters.syncClient(of: pki.a), trusting: [pki.a, pki.b])
        try await SyncPair.with(server: server, client: client, receiver: receiver) { pair in
            var huge = Self.status()
            huge.message = String(repeating: "x", count: 2 << 20)
            do throws(SyncCallError) {
                _ = try await pair.dialer.sendSourceStatus(to: pair.address, migrationID: "big", status: huge)
                Issue.record("a 2 MiB status was taken")
            } catch {
                let words = error.description
                #expect(!words.isEmpty)
            }
            let after = try await pair.dialer.sendSourceStatus(
                to: pair.address, migrationID: "ok", status: Self.status())
            #expect(after == "success")
            #expect(receiver.calls.withLockedValue { $0 }.count == 1)
        }
    }
}
