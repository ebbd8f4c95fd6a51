public import ClusterAPI
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
public import Logging
public import ServiceLifecycle
import SwiftProtobuf
public import TLSTransport
import X509

/// A VMI status a peer sent for one migration, read and bounded (`VMIStatusRequest.status()`).
public struct PeerStatus: Sendable, Hashable {
    public var migrationID: String
    public var status: VirtualMachineInstance.Status
    /// The status as sent, fields vmsync does not model included.
    public var envelope: JSONValue

    public init(migrationID: String, status: VirtualMachineInstance.Status, envelope: JSONValue) {
        self.migrationID = migrationID
        self.status = status
        self.envelope = envelope
    }
}

/// What the sync endpoint asks of its cluster: apply a peer's half of a migration, or cancel one. The controller
/// implements it over its store; each answer is the response message, each refusal a `SyncRefusal`.
public protocol SyncReceiver: Sendable {
    /// `SyncSourceMigrationStatus`: the source's VMI status for the migration this cluster receives
    /// (`spec.receive.migrationID`).
    func applySourceStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String
    /// `SyncTargetMigrationStatus`: the target's VMI status for the migration this cluster sends (`spec.sendTo`).
    func applyTargetStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String
    /// `CancelMigration`: cancel this cluster's migration whose VMIM has `migrationUID`.
    func cancelMigration(uid migrationUID: String, from peer: SyncPeer) async throws(SyncRefusal) -> String
}

/// KubeVirt's `kubevirt.synchronization.Synchronize` service over a `SyncReceiver`: requests are read with bounds,
/// the peer is the verified chain of the connection, refusals become gRPC statuses with KubeVirt's words.
struct SynchronizeService: Kubevirt_Synchronization_Synchronize.SimpleServiceProtocol {
    let receiver: any SyncReceiver
    let logger: Logger

    func syncSourceMigrationStatus(
        request: Kubevirt_Synchronization_VMIStatusRequest, context: ServerContext
    ) async throws -> Kubevirt_Synchronization_VMIStatusResponse {
        let peer = try Self.peer(of: context)
        let status = try Self.read(request, missing: "must pass source status")
        let message = try await answer("SyncSourceMigrationStatus", peer) { () async throws(SyncRefusal) in
            try await receiver.applySourceStatus(status, from: peer)
        }
        return .with { $0.message = message }
    }

    func syncTargetMigrationStatus(
        request: Kubevirt_Synchronization_VMIStatusRequest, context: ServerContext
    ) async throws -> Kubevirt_Synchronization_VMIStatusResponse {
        let peer = try Self.peer(of: context)
        let status = try Self.read(request, missing: "must pass target status")
        let message = try await answer("SyncTargetMigrationStatus", peer) { () async throws(SyncRefusal) in
            try await receiver.applyTargetStatus(status, from: peer)
        }
        return .with { $0.message = message }
    }

    func cancelMigration(
        request: Kubevirt_Synchronization_MigrationCancelRequest, context: ServerContext
    ) async throws -> Kubevirt_Synchronization_MigrationCancelResponse {
        let peer = try Self.peer(of: context)
        guard !request.migrationUid.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "must pass the migration uid to cancel")
        }
        let uid = request.migrationUid
        let message = try await answer("CancelMigration", peer) { () async throws(SyncRefusal) in
            try await receiver.cancelMigration(uid: uid, from: peer)
        }
        return .with { $0.message = message }
    }

    /// Runs `body`, logging a refusal and turning it into the gRPC status the peer sees.
    private func answer(
        _ method: String, _ peer: SyncPeer, _ body: () async throws(SyncRefusal) -> String
    ) async throws(RPCError) -> String {
        do {
            return try await body()
        } catch {
            logger.info(
                "sync call refused",
                metadata: ["method": "\(method)", "peer": "\(peer)", "reason": "\(error.description)"])
            throw RPCError(code: error.code.rpcCode, message: error.description)
        }
    }

    /// The request's status, or INVALID_ARGUMENT with KubeVirt's words when it carries none.
    static func read(_ request: Kubevirt_Synchronization_VMIStatusRequest, missing: String) throws(RPCError)
        -> PeerStatus
    {
        guard request.hasVmiStatus, !request.vmiStatus.vmiStatusJson.isEmpty else {
            throw RPCError(code: .invalidArgument, message: missing)
        }
        do {
            let (status, envelope) = try request.status()
            return PeerStatus(migrationID: request.migrationID, status: status, envelope: envelope)
        } catch {
            throw RPCError(code: .invalidArgument, message: error.description)
        }
    }

    /// The verified peer of the call's connection (the transport's validated chain). A call without one cannot get
    /// here over the endpoint's mutual TLS; it is refused all the same.
    static func peer(of context: ServerContext) throws(RPCError) -> SyncPeer {
        guard let transport = context.transportSpecific as? HTTP2ServerTransport.Posix.Context,
            let chain = transport.peerCertificateChain,
            let peer = SyncPeer(validatedChain: Array(chain), remotePeer: context.remotePeer)
        else {
            throw RPCError(code: .unauthenticated, message: "the caller presented no verified certificate chain")
        }
        return peer
    }
}

extension SyncRefusal.Code {
    var rpcCode: RPCError.Code {
        switch self {
        case .invalidArgument: .invalidArgument
        case .notFound: .notFound
        case .permissionDenied: .permissionDenied
        case .unavailable: .unavailable
        }
    }
}

/// The cluster's sync endpoint: KubeVirt's Synchronize service over gRPC on mutual TLS (default port 9185). Only
/// KubeVirt's synchronization client identity is let in (CN `kubevirt.io:system:client:virt-synchronization-controller`),
/// chained to this cluster's CA or one imported from another cluster; the trust bundle and the endpoint's own
/// certificate are those in force at each handshake (`TLSContextProvider.reload` needs no restart).
public final class SyncEndpoint: Service {
    /// What the endpoint checks on its callers: the sync client role (its fixed CN).
    public static let callerPolicy = PeerPolicy(allowedRoles: [.syncClient])
    /// KubeVirt's port for the synchronization controller.
    public static let defaultPort = 9185

    private let server: GRPCServer<HTTP2ServerTransport.Posix>
    private let transport: HTTP2ServerTransport.Posix
    private let logger: Logger

    /// An endpoint for `receiver` on `host:port` (port 0 picks one; `boundAddress` tells which), presenting the
    /// identity of `provider` (a sync-server certificate).
    public init(
        host: String, port: Int, provider: TLSContextProvider, receiver: any SyncReceiver, logger: Logger,
        onRefusedPeer: @escaping @Sendable (TransportError) -> Void = { _ in }
    ) throws {
        let tls = MutualTLS(provider: provider, policy: Self.callerPolicy)
        let callback = tls.verificationCallback(for: .client) { verdict in
            if case .failure(let error) = verdict { onRefusedPeer(error) }
        }
        let security = try HTTP2ServerTransport.Posix.TransportSecurity.mTLS(
            certificateReloader: tls.certificateReloader
        ) { config in
            config.trustRoots = .certificates(provider.trust.certificates.map { .bytes(PEM.der($0), format: .der) })
            config.customVerificationCallback = callback
            config.requireALPN = false
        }
        transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port), transportSecurity: security,
            config: .defaults {
                // A status is bounded by `maximumStatusBytes`; a larger message is refused before it is parsed.
                $0.rpc.maxRequestPayloadSize = Kubevirt_Synchronization_VMIStatusRequest.maximumStatusBytes + 4096
            })
        let service = SynchronizeService(receiver: receiver, logger: logger)
        server = GRPCServer(transport: transport, services: [service])
        self.logger = logger
    }

    /// Where the endpoint listens once it runs ("host:port").
    public var boundAddress: String {
        get async throws {
            let address = try await transport.listeningAddress
            if let ipv4 = address.ipv4 { return "\(ipv4.host):\(ipv4.port)" }
            if let ipv6 = address.ipv6 { return "[\(ipv6.host)]:\(ipv6.port)" }
            return "\(address)"
        }
    }

    /// Serves until graceful shutdown (in-flight calls finish) or cancellation. Stop it with `shutdown()` (or the
    /// service group's graceful shutdown) rather than by cancelling: cancelling NIO's server while an accepted
    /// connection is still queued traps (swift-nio#3481); on cancellation it begins a graceful shutdown first, which
    /// narrows that window but cannot close it.
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await withTaskCancellationHandler {
                try await server.serve()
            } onCancel: {
                self.server.beginGracefulShutdown()
            }
        } onGracefulShutdown: {
            self.server.beginGracefulShutdown()
        }
    }

    /// Stops taking connections; `run()` returns once the calls in flight have finished.
    public func shutdown() {
        server.beginGracefulShutdown()
    }
}
