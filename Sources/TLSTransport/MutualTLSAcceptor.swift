public import Logging
import NIOConcurrencyHelpers
public import NIOCore

/// Admits the connections a mutual-TLS listener accepts: the connection limit, sniffing, TLS with `PeerVerifier`'s
/// role checks, and the handshake deadline, each refusal reported to `onRejection` with its reason.
///
/// `MutualTLSServer` uses it for its own listeners; a server built on another framework (the Hummingbird API server)
/// calls `admit(_:)` from its child-channel setup, so both have the same TLS, hot reload and refusals.
public final class MutualTLSAcceptor: Sendable {
    private let provider: TLSContextProvider
    private let policy: PeerPolicy
    private let logger: Logger
    private let handshakeTimeout: TimeAmount
    private let maximumConnections: Int
    private let onRejection: @Sendable (HandshakeRejection) -> Void
    private let open = NIOLockedValueBox(0)

    /// An acceptor with `provider`'s current material for every handshake (so `TLSContextProvider.reload` applies to
    /// the next connection) and `policy` for the client's certificate.
    public init(
        provider: TLSContextProvider,
        policy: PeerPolicy,
        logger: Logger = Logger(label: "vmsync.tls.server"),
        handshakeTimeout: TimeAmount = MutualTLSServer.defaultHandshakeTimeout,
        maximumConnections: Int = MutualTLSServer.defaultMaximumConnections,
        onRejection: @escaping @Sendable (HandshakeRejection) -> Void = { _ in }
    ) {
        self.provider = provider
        self.policy = policy
        self.logger = logger
        self.handshakeTimeout = handshakeTimeout
        self.maximumConnections = maximumConnections
        self.onRejection = onRejection
    }

    /// The connections admitted and not closed yet.
    public var openConnections: Int { open.withLockedValue { $0 } }

    /// Installs the TLS handlers on an accepted `channel` (call it on the channel's event loop, before the channel is
    /// registered); the future yields the verified client once the handshake completed, and fails — with the channel
    /// closed — when the client is refused or too slow. Beyond the connection limit it throws at once, before any
    /// TLS work; the caller then drops the channel.
    public func admit(_ channel: any Channel) throws(TransportError) -> EventLoopFuture<PeerIdentity> {
        let remote = channel.remoteAddress?.description ?? "unknown peer"
        let limit = maximumConnections
        let admitted = open.withLockedValue { count -> Bool in
            guard count < limit else { return false }
            count += 1
            return true
        }
        guard admitted else {
            logger.warning(
                "connection refused: the listener is full", metadata: ["remote": "\(remote)", "limit": "\(limit)"])
            onRejection(
                HandshakeRejection(
                    remote: remote,
                    error: TransportError(.channelRefused, "the listener holds its maximum of \(limit) connections")))
            throw TransportError(.channelRefused, "connection limit reached")
        }
        let open = self.open
        channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
        let handshake: EventLoopFuture<PeerIdentity>
        do {
            handshake = try Handshake.addServerHandlers(to: channel, provider: provider, policy: policy)
        } catch {
            throw Handshake.describe(error, peer: "client")
        }
        let (logger, onRejection, timeout) = (self.logger, self.onRejection, handshakeTimeout)
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            logger.info("handshake timed out", metadata: ["remote": "\(remote)"])
            onRejection(
                HandshakeRejection(
                    remote: remote,
                    error: TransportError(
                        .handshakeFailed,
                        "the client did not complete its handshake within \(timeout.nanoseconds / 1_000_000) ms")))
            channel.close(promise: nil)
        }
        handshake.whenComplete { _ in deadline.cancel() }
        return handshake.flatMapError { error in
            let reason = Handshake.describe(error, peer: "client")
            logger.info("handshake refused", metadata: ["remote": "\(remote)", "reason": "\(reason)"])
            onRejection(HandshakeRejection(remote: remote, error: reason))
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(reason)
        }
    }
}
