public import ClusterAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
public import Logging
import NIOConcurrencyHelpers
public import ServiceLifecycle
import SwiftProtobuf
public import TLSTransport

/// Why a call to a peer's sync endpoint failed: the peer's refusal (its gRPC status and words), or the connection
/// (unreachable, the handshake refused — with the reason this side's verification gave, when it was this side).
public struct SyncCallError: Error, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The peer answered with a refusal.
        case refused(SyncRefusal.Code?)
        /// The call did not reach the peer's service (connection, TLS, deadline).
        case unreachable
    }

    public let kind: Kind
    public let description: String
}

/// The controller's side of the sync calls: one cached gRPC client per peer address (a new address is a new client:
/// a peer that moved is redialled), mutual TLS with KubeVirt's synchronization client identity, only a peer with the
/// sync server identity (CN `kubevirt.io:system:node:virt-synchronization-controller`) accepted, `callTimeout` per
/// call. A client unused for `idleTimeout` is closed. Runs as a service: its connections live in `run()`.
public final class SyncDialer: Service, Sendable {
    /// What the dialer checks on the peers it calls: the sync server role (its fixed CN).
    public static let peerPolicy = PeerPolicy(allowedRoles: [.syncServer])

    private struct Entry {
        var client: GRPCClient<HTTP2ClientTransport.Posix>
        var lastUsed: ContinuousClock.Instant
    }

    private let tls: MutualTLS
    /// The identity and trust the dialer presents and checks with (reload it to change them).
    public var provider: TLSContextProvider { tls.provider }
    private let callTimeout: Duration
    private let idleTimeout: Duration
    private let logger: Logger
    private let clients = NIOLockedValueBox<[String: Entry]>([:])
    /// The last verification refusal per address, to say why a handshake failed.
    private let refusals = NIOLockedValueBox<[String: TransportError]>([:])
    private let started: AsyncStream<GRPCClient<HTTP2ClientTransport.Posix>>
    private let start: AsyncStream<GRPCClient<HTTP2ClientTransport.Posix>>.Continuation

    /// A dialer presenting the identity of `provider` (a sync-client certificate).
    public init(
        provider: TLSContextProvider, logger: Logger, callTimeout: Duration = .seconds(30),
        idleTimeout: Duration = .seconds(600)
    ) {
        self.tls = MutualTLS(provider: provider, policy: Self.peerPolicy)
        self.callTimeout = callTimeout
        self.idleTimeout = idleTimeout
        self.logger = logger
        (started, start) = AsyncStream.makeStream()
    }

    /// Sends this cluster's source status to the target at `address` (`SyncSourceMigrationStatus`).
    public func sendSourceStatus(
        to address: String, migrationID: String, status: VirtualMachineInstance.Status
    ) async throws(SyncCallError) -> String {
        try await send(status, migrationID: migrationID, to: address, bySource: true)
    }

    /// Sends this cluster's target status to the source at `address` (`SyncTargetMigrationStatus`).
    public func sendTargetStatus(
        to address: String, migrationID: String, status: VirtualMachineInstance.Status
    ) async throws(SyncCallError) -> String {
        try await send(status, migrationID: migrationID, to: address, bySource: false)
    }

    private func send(
        _ status: VirtualMachineInstance.Status, migrationID: String, to address: String, bySource: Bool
    ) async throws(SyncCallError) -> String {
        let request = try Self.request(migrationID: migrationID, status: status)
        return try await call(address) { client, options in
            let service = Kubevirt_Synchronization_Synchronize.Client(wrapping: client)
            return bySource
                ? try await service.syncSourceMigrationStatus(request, options: options).message
                : try await service.syncTargetMigrationStatus(request, options: options).message
        }
    }

    /// Asks the peer at `address` to cancel its migration whose VMIM has `migrationUID` (`CancelMigration`).
    public func cancelMigration(at address: String, migrationUID: String) async throws(SyncCallError) -> String {
        try await call(address) { client, options in
            try await Kubevirt_Synchronization_Synchronize.Client(wrapping: client).cancelMigration(
                .with { $0.migrationUid = migrationUID }, options: options
            ).message
        }
    }

    private static func request(migrationID: String, status: VirtualMachineInstance.Status) throws(SyncCallError)
        -> Kubevirt_Synchronization_VMIStatusRequest
    {
        do {
            return try Kubevirt_Synchronization_VMIStatusRequest(migrationID: migrationID, status: status)
        } catch {
            throw SyncCallError(kind: .refused(.invalidArgument), description: "the status cannot be encoded: \(error)")
        }
    }

    private func call(
        _ address: String,
        _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>, CallOptions) async throws -> String
    ) async throws(SyncCallError) -> String {
        let client: GRPCClient<HTTP2ClientTransport.Posix>
        do {
            client = try self.client(for: address)
        } catch {
            throw SyncCallError(kind: .unreachable, description: "cannot dial \(address): \(error)")
        }
        var options = CallOptions.defaults
        options.timeout = callTimeout
        do {
            return try await body(client, options)
        } catch let error as RPCError {
            throw describe(error, address: address)
        } catch {
            throw SyncCallError(kind: .unreachable, description: "calling \(address) failed: \(error)")
        }
    }

    private func describe(_ error: RPCError, address: String) -> SyncCallError {
        let refusedCodes: [RPCError.Code: SyncRefusal.Code] = [
            .invalidArgument: .invalidArgument, .notFound: .notFound, .permissionDenied: .permissionDenied,
        ]
        if let code = refusedCodes[error.code] {
            return SyncCallError(kind: .refused(code), description: "\(address) refused: \(error.message)")
        }
        if error.code == .unknown {
            // KubeVirt's controller answers its refusals with Go errors, which travel as UNKNOWN.
            return SyncCallError(kind: .refused(nil), description: "\(address) refused: \(error.message)")
        }
        if error.code == .unavailable, let refusal = refusals.withLockedValue({ $0[address] }) {
            return SyncCallError(kind: .unreachable, description: "\(address) is not trusted: \(refusal.message)")
        }
        if error.code == .unavailable, error.message.contains("before completing the HTTP/2 connection preface") {
            return SyncCallError(
                kind: .unreachable,
                description:
                    "\(address) closed the connection during the handshake: it does not trust this cluster's sync client certificate (is this cluster's CA imported there, and the certificate current?)"
            )
        }
        if error.code == .deadlineExceeded {
            return SyncCallError(
                kind: .unreachable, description: "\(address) did not answer within \(callTimeout.components.seconds) s")
        }
        return SyncCallError(kind: .unreachable, description: "\(address): \(error.code): \(error.message)")
    }

    /// The cached client for `address`, or a new one (started by `run()`); clients idle past `idleTimeout` close.
    private func client(for address: String) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        let now = ContinuousClock.now
        let (client, created, idle) = try clients.withLockedValue {
            clients -> (GRPCClient<HTTP2ClientTransport.Posix>, Bool, [GRPCClient<HTTP2ClientTransport.Posix>]) in
            let idle = clients.filter { $0.key != address && now - $0.value.lastUsed > idleTimeout }
            for key in idle.keys { clients[key] = nil }
            if var entry = clients[address] {
                entry.lastUsed = now
                clients[address] = entry
                return (entry.client, false, idle.values.map(\.client))
            }
            let client = GRPCClient(transport: try makeTransport(address))
            clients[address] = Entry(client: client, lastUsed: now)
            return (client, true, idle.values.map(\.client))
        }
        for client in idle { client.beginGracefulShutdown() }
        if created { start.yield(client) }
        return client
    }

    private func makeTransport(_ address: String) throws -> HTTP2ClientTransport.Posix {
        guard case .tcp(let host, let port) = try Endpoint(parsing: address), port > 0 else {
            throw TransportError(.invalidArgument, "\"\(address)\" is not HOST:PORT")
        }
        let callback = tls.verificationCallback(for: .server) { [refusals] verdict in
            refusals.withLockedValue {
                switch verdict {
                case .failure(let error): $0[address] = error
                case .success: $0[address] = nil
                }
            }
        }
        let security = try HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
            certificateReloader: tls.certificateReloader
        ) { config in
            config.trustRoots = .certificates(tls.provider.trust.certificates.map { .bytes(PEM.der($0), format: .der) })
            config.serverCertificateVerification = .noHostnameVerification
            config.customVerificationCallback = callback
        }
        // An address literal is dialled as one (a DNS target would send it as the TLS server name, which TLS forbids).
        let isIPv4 =
            host.split(separator: ".", omittingEmptySubsequences: false).count == 4
            && host.allSatisfy { $0.isNumber || $0 == "." }
        let target: any ResolvableTarget =
            host.contains(":")
            ? .ipv6(host: host, port: port) : isIPv4 ? .ipv4(host: host, port: port) : .dns(host: host, port: port)
        return try HTTP2ClientTransport.Posix(
            target: target, transportSecurity: security,
            config: .defaults {
                $0.backoff = .init(initial: .milliseconds(100), max: .seconds(5), multiplier: 1.6, jitter: 0.2)
            })
    }

    /// Runs the clients' connections until graceful shutdown or cancellation; then every client closes.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                // Ends when shutdown finishes the stream, or on cancellation (which cancels the connections too).
                for await client in started {
                    group.addTask { try? await client.runConnections() }
                }
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
    }

    /// Closes every client (calls in flight finish); `run()` returns then.
    public func shutdown() {
        start.finish()
        let all = clients.withLockedValue { clients in
            defer { clients = [:] }
            return clients.values.map(\.client)
        }
        for client in all { client.beginGracefulShutdown() }
    }
}
