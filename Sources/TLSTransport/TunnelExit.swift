public import Logging
public import NIOCore
public import NIOPosix
public import ServiceLifecycle

/// The receiving end of byte tunnels: an mTLS listener that joins each authorized, named channel to a local target.
///
/// As a service it serves from `start` on, and `run` closes it when the service group shuts down or the task is
/// cancelled.
public final class TunnelExit: Service {
    /// The mTLS endpoint peers dial.
    public var endpoint: Endpoint { server.endpoint }
    /// The routes this exit serves; change them while it runs.
    public let routes: TunnelRoutingTable

    private let server: MutualTLSServer
    private let connections: ConnectionSet

    private init(server: MutualTLSServer, routes: TunnelRoutingTable, connections: ConnectionSet) {
        self.server = server
        self.routes = routes
        self.connections = connections
    }

    /// The number of open connections (tunnel and target sides both count).
    public var openConnections: Int { connections.count }

    /// Starts listening on `endpoint` for peers allowed by `peers` (at the TLS level); each channel is then checked
    /// against `routes`.
    public static func start(
        on endpoint: Endpoint,
        provider: TLSContextProvider,
        peers: PeerPolicy,
        routes: TunnelRoutingTable,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        requestTimeout: TimeAmount = .seconds(10),
        logger: Logger = Logger(label: "vmsync.tunnel.exit"),
        onEvent: @escaping @Sendable (TunnelEvent) -> Void = { _ in }
    ) async throws(TransportError) -> TunnelExit {
        let connections = ConnectionSet()
        let server = try await MutualTLSServer.start(
            on: endpoint,
            provider: provider,
            policy: peers,
            group: group,
            logger: logger,
            onRejection: { onEvent(.refused(channel: nil, error: $0.error)) }
        ) { channel, peer in
            connections.track(channel)
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    ChannelRequestHandler(
                        peer: peer,
                        routes: routes,
                        connections: connections,
                        requestTimeout: requestTimeout,
                        logger: logger,
                        onEvent: onEvent
                    )
                )
            }
        }
        return TunnelExit(server: server, routes: routes, connections: connections)
    }

    /// Waits for graceful shutdown or cancellation, then closes.
    public func run() async {
        try? await gracefulShutdown()
        await close()
    }

    /// Stops listening and closes every open tunnel.
    public func close() async {
        await server.close()
        await connections.closeAll()
    }
}

/// Reads the channel request of a freshly authenticated connection, then connects and glues it to its target.
final class ChannelRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private enum State {
        case waiting
        case connecting
        case finished
    }

    private let peer: PeerIdentity
    private let routes: TunnelRoutingTable
    private let connections: ConnectionSet
    private let requestTimeout: TimeAmount
    private let logger: Logger
    private let onEvent: @Sendable (TunnelEvent) -> Void
    private var buffer = ByteBuffer()
    private var peerEnded = false
    private var state = State.waiting
    private var timeout: Scheduled<Void>?

    init(
        peer: PeerIdentity,
        routes: TunnelRoutingTable,
        connections: ConnectionSet,
        requestTimeout: TimeAmount,
        logger: Logger,
        onEvent: @escaping @Sendable (TunnelEvent) -> Void
    ) {
        self.peer = peer
        self.routes = routes
        self.connections = connections
        self.requestTimeout = requestTimeout
        self.logger = logger
        self.onEvent = onEvent
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(in: requestTimeout) {
            let (handler, context) = loopBound.value
            guard case .waiting = handler.state else { return }
            handler.refuse(
                context: context,
                channel: nil,
                TransportError(
                    .protocolViolation, "no channel request within \(handler.requestTimeout.nanoseconds / 1_000_000) ms"
                )
            )
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        guard case .waiting = state else { return }
        do {
            if let name = try TunnelProtocol.decodeRequest(&buffer) {
                open(context: context, channel: name)
            }
        } catch {
            refuse(context: context, channel: nil, error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .finished
        timeout?.cancel()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The peer ended its stream before (or instead of) being joined to a target: end ours too.
        if let event = event as? ChannelEvent, case .inputClosed = event {
            switch state {
            case .waiting:
                timeout?.cancel()
                refuse(
                    context: context,
                    channel: nil,
                    TransportError(
                        .protocolViolation, "the peer closed the connection before sending a channel request")
                )
            case .connecting:
                // Replayed to the tunnel once it is joined.
                peerEnded = true
            case .finished:
                break
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        ChannelTeardown.abort(context.channel)
    }

    private func open(context: ChannelHandlerContext, channel name: String) {
        timeout?.cancel()
        state = .connecting
        switch routes.route(peer: peer, channel: name) {
        case .refuse(let reason):
            refuse(context: context, channel: name, TransportError(.channelRefused, reason))
        case .forward(let target):
            // Hold further bytes until the target is connected; they are replayed from `buffer`.
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
            let bootstrap = ClientBootstrap(group: context.eventLoop)
                .connectTimeout(.seconds(10))
                .channelOption(.allowRemoteHalfClosure, value: true)
            target.connect(bootstrap).assumeIsolated().whenComplete { result in
                switch result {
                case .success(let targetChannel):
                    self.join(context: context, channel: name, target: targetChannel, leftover: ByteBuffer())
                case .failure(let error):
                    self.refuse(
                        context: context,
                        channel: name,
                        TransportError(
                            .connectionFailed, "target \(target) of channel \"\(name)\" is unreachable: \(error)")
                    )
                }
            }
        case .relay(let hop):
            // The same channel opened at the next exit; its answer is this exit's answer, within the time a peer
            // has for its request here.
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
            let (connections, requestTimeout) = (connections, requestTimeout)
            MutualTLSClient.dial(
                hop.remote, provider: hop.provider, policy: hop.exitPolicy,
                bootstrap: ClientBootstrap(group: context.eventLoop), connectTimeout: .seconds(10)
            ).flatMap { next in
                connections.track(next.channel)
                let expiry = next.channel.eventLoop.scheduleTask(in: requestTimeout) {
                    ChannelTeardown.abort(next.channel)
                }
                return TunnelEntry.request(channel: name, on: next.channel).map { (next.channel, $0) }
                    .always { _ in expiry.cancel() }
            }.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let (next, leftover)):
                    self.join(context: context, channel: name, target: next, leftover: leftover)
                case .failure(let error):
                    // The details (the next hop's address among them) stay in this side's log; the peer learns the
                    // hop failed and the next exit's own answer, when it gave one.
                    let reason = error as? TransportError ?? Handshake.describe(error, peer: "next tunnel exit")
                    self.logger.notice(
                        "tunnel relay failed",
                        metadata: ["channel": "\(name)", "next": "\(hop.remote)", "reason": "\(reason)"])
                    let answer =
                        reason.code == .channelRefused
                        ? reason.message : "the next hop did not carry it (\(reason.code))"
                    self.refuse(
                        context: context, channel: name,
                        TransportError(reason.code, "channel \"\(name)\" could not be carried on: \(answer)"))
                }
            }
        }
    }

    /// Joins the peer's connection to `target`; `leftover` is what the target sent before the join (a next hop's bytes
    /// behind its accepting reply), passed on right after this exit's own reply.
    private func join(context: ChannelHandlerContext, channel name: String, target: any Channel, leftover: ByteBuffer) {
        guard context.channel.isActive else {
            ChannelTeardown.abort(target)
            return
        }
        // Withdrawn while the target was being connected: refused after all.
        guard routes.carry(channel: name, on: [context.channel, target]) else {
            ChannelTeardown.abort(target)
            refuse(
                context: context, channel: name, TransportError(.channelRefused, "channel \"\(name)\" was withdrawn"))
            return
        }
        connections.track(target)
        var reply = context.channel.allocator.buffer(capacity: 16)
        TunnelProtocol.encodeReply(accepted: true, message: "ok", into: &reply)
        if leftover.readableBytes > 0 {
            context.write(NIOAny(reply), promise: nil)
            context.writeAndFlush(NIOAny(leftover), promise: nil)
        } else {
            context.writeAndFlush(NIOAny(reply), promise: nil)
        }
        let (tunnelSide, targetSide) = GlueHandler.pair()
        do {
            try target.pipeline.syncOperations.addHandler(targetSide)
            try context.pipeline.syncOperations.addHandler(tunnelSide, position: .after(self))
        } catch {
            ChannelTeardown.abort(target)
            ChannelTeardown.abort(context.channel)
            return
        }
        state = .finished
        // Bytes and an end of stream that arrived while the target was connecting go to the tunnel handler now.
        if buffer.readableBytes > 0 {
            context.fireChannelRead(NIOAny(buffer))
            context.fireChannelReadComplete()
        }
        buffer = ByteBuffer()
        if peerEnded {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        logger.debug("tunnel channel opened", metadata: ["channel": "\(name)", "peer": "\(peer)"])
        onEvent(.opened(channel: name, peer: peer))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        context.read()
    }

    private func refuse(context: ChannelHandlerContext, channel name: String?, _ error: TransportError) {
        state = .finished
        logger.info("tunnel channel refused", metadata: ["peer": "\(peer)", "reason": "\(error)"])
        onEvent(.refused(channel: name, error: error))
        var reply = context.channel.allocator.buffer(capacity: 64)
        TunnelProtocol.encodeReply(accepted: false, message: error.message, into: &reply)
        try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        context.writeAndFlush(NIOAny(reply), promise: nil)
        ChannelTeardown.finish(context.channel)
    }
}
