public import Logging
import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix

/// A listener that accepts only mutually authenticated TLS connections from allowed peers.
///
/// Every accepted connection gets the provider's current material, so `TLSContextProvider.reload` applies to the
/// next handshake while this listener keeps running. After a successful handshake `initializer` adds the
/// application's handlers; a refused handshake is reported to `onRejection` with its reason and closed.
public final class MutualTLSServer: Sendable {
    /// The endpoint actually bound (with the chosen port when 0 was asked for).
    public let endpoint: Endpoint
    private let channel: any Channel
    private let acceptor: MutualTLSAcceptor

    private init(endpoint: Endpoint, channel: any Channel, acceptor: MutualTLSAcceptor) {
        self.endpoint = endpoint
        self.channel = channel
        self.acceptor = acceptor
    }

    /// The connections it holds now (admitted, handshaking or established).
    public var openConnections: Int { acceptor.openConnections }

    /// How many connections a listener holds at most by default; one more is closed as soon as it is accepted.
    public static let defaultMaximumConnections = 1024
    /// How long a client may take to complete its handshake by default.
    public static let defaultHandshakeTimeout = TimeAmount.seconds(10)

    /// Binds `endpoint` and starts accepting. A client that has not completed its handshake within
    /// `handshakeTimeout` is closed (a slow or silent peer holds no connection); beyond `maximumConnections` open
    /// connections a new one is closed at once, before any TLS work, and reported to `onRejection`.
    public static func start(
        on endpoint: Endpoint,
        provider: TLSContextProvider,
        policy: PeerPolicy,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "vmsync.tls.server"),
        handshakeTimeout: TimeAmount = defaultHandshakeTimeout,
        maximumConnections: Int = defaultMaximumConnections,
        onRejection: @escaping @Sendable (HandshakeRejection) -> Void = { _ in },
        initializer: @escaping @Sendable (any Channel, PeerIdentity) -> EventLoopFuture<Void>
    ) async throws(TransportError) -> MutualTLSServer {
        let acceptor = MutualTLSAcceptor(
            provider: provider, policy: policy, logger: logger, handshakeTimeout: handshakeTimeout,
            maximumConnections: maximumConnections, onRejection: onRejection)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                let handshake: EventLoopFuture<PeerIdentity>
                do {
                    handshake = try acceptor.admit(channel)
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                handshake.whenSuccess { peer in
                    initializer(channel, peer).whenFailure { error in
                        logger.warning(
                            "connection setup failed",
                            metadata: ["peer": "\(peer)", "error": "\(error)"]
                        )
                        channel.close(promise: nil)
                    }
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
        do {
            let channel = try await endpoint.bind(bootstrap)
            return MutualTLSServer(
                endpoint: Endpoint.bound(channel, requested: endpoint), channel: channel, acceptor: acceptor)
        } catch {
            throw TransportError(.connectionFailed, "could not listen on \(endpoint): \(error)")
        }
    }

    /// Stops accepting. Established connections are not touched.
    public func close() async {
        try? await channel.close()
    }
}

/// Dials mutually authenticated TLS connections.
public enum MutualTLSClient {
    /// Connects to `endpoint`, completes the handshake, verifies the server against `policy`, and returns the
    /// channel (with TLS in its pipeline) and the server's identity.
    ///
    /// With TLS 1.3 the server judges the client's certificate after the client finished its side of the
    /// handshake, so a refusal by the server surfaces on the first read as a `rejectedByPeer` error. Handlers that
    /// must see it are added by `initializer`, which runs on the channel's event loop behind the TLS handlers before
    /// the handshake starts.
    public static func connect(
        to endpoint: Endpoint,
        provider: TLSContextProvider,
        policy: PeerPolicy,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(10),
        initializer: (@Sendable (any Channel) throws -> Void)? = nil
    ) async throws(TransportError) -> (channel: any Channel, server: PeerIdentity) {
        do {
            return try await dial(
                endpoint,
                provider: provider,
                policy: policy,
                bootstrap: ClientBootstrap(group: group),
                connectTimeout: connectTimeout,
                initializer: initializer
            ).get()
        } catch {
            throw error as? TransportError ?? Handshake.describe(error, peer: "server")
        }
    }

    /// The future-based dial used where the caller must stay on one event loop (tunnels).
    static func dial(
        _ endpoint: Endpoint,
        provider: TLSContextProvider,
        policy: PeerPolicy,
        bootstrap: ClientBootstrap,
        connectTimeout: TimeAmount,
        initializer: (@Sendable (any Channel) throws -> Void)? = nil
    ) -> EventLoopFuture<(channel: any Channel, server: PeerIdentity)> {
        let handshake = HandshakeSlot()
        let connecting =
            bootstrap
            .connectTimeout(connectTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                do {
                    handshake.set(try Handshake.addClientHandlers(to: channel, provider: provider, policy: policy))
                    try initializer?(channel)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        return endpoint.connect(connecting)
            .flatMapErrorThrowing { error in
                throw TransportError(.connectionFailed, "could not connect to \(endpoint): \(error)")
            }
            .flatMap { channel in
                guard let future = handshake.get() else {
                    channel.close(promise: nil)
                    return channel.eventLoop.makeFailedFuture(
                        TransportError(.handshakeFailed, "TLS handlers were not installed for \(endpoint)")
                    )
                }
                // A server that accepts but never answers (stopped, or its link gone) must not hold the dialer: the
                // handshake gets the connect timeout too.
                let expired = NIOLockedValueBox(false)
                let deadline = channel.eventLoop.scheduleTask(in: connectTimeout) {
                    expired.withLockedValue { $0 = true }
                    channel.close(promise: nil)
                }
                return future.map { identity in
                    deadline.cancel()
                    return (channel, identity)
                }.flatMapError { error in
                    deadline.cancel()
                    channel.close(promise: nil)
                    if expired.withLockedValue({ $0 }) {
                        return channel.eventLoop.makeFailedFuture(
                            TransportError(
                                .handshakeFailed,
                                "\(endpoint): the TLS handshake did not finish within \(connectTimeout.nanoseconds / 1_000_000) ms"
                            ))
                    }
                    let reason = Handshake.describe(error, peer: "server")
                    return channel.eventLoop.makeFailedFuture(
                        TransportError(reason.code, "\(endpoint): \(reason.message)"))
                }
            }
    }
}

/// Carries the handshake future out of the channel initializer.
final class HandshakeSlot: Sendable {
    private let box = NIOLockedValueBox<EventLoopFuture<PeerIdentity>?>(nil)
    func set(_ future: EventLoopFuture<PeerIdentity>) { box.withLockedValue { $0 = future } }
    func get() -> EventLoopFuture<PeerIdentity>? { box.withLockedValue { $0 } }
}
