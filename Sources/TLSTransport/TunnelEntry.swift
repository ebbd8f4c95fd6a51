public import Logging
import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix

/// The dialing end of a byte tunnel: a local listener whose every connection is carried over mutual TLS to a
/// `TunnelExit` under one channel name.
public final class TunnelEntry: Sendable {
    /// The local endpoint clients connect to (with the chosen port when 0 was asked for).
    public let endpoint: Endpoint
    /// The channel every connection of this entry opens.
    public let channel: String

    private let listener: any Channel
    private let connections: ConnectionSet
    private let spares: NIOLockedValueBox<[Spare]>

    private struct Spare {
        var connection: EventLoopFuture<(any Channel, PeerIdentity)>
        var dialled: NIODeadline
    }

    private init(
        endpoint: Endpoint, channel: String, listener: any Channel, connections: ConnectionSet,
        spares: NIOLockedValueBox<[Spare]>
    ) {
        self.endpoint = endpoint
        self.channel = channel
        self.listener = listener
        self.connections = connections
        self.spares = spares
    }

    /// The number of open connections (local and tunnel sides both count).
    public var openConnections: Int { connections.count }

    /// How long a spare connection is used at most after it was dialled: well inside the exit's time for a channel
    /// request, so an idle spare is never one the exit is about to drop.
    public static let spareLifetime: TimeAmount = .seconds(5)

    /// Listens on `local`; each accepted connection dials `remote` with `provider`'s identity, checks the exit's
    /// certificate against `exitPolicy`, opens `channel`, and then relays bytes both ways.
    /// `spareConnections` connections are dialled at once, ahead of the first clients, and handed to them handshake
    /// done (one fewer round of TCP and TLS on the path of a client that must start fast, e.g. libvirt's migration
    /// connection); a spare that failed, closed or waited longer than `spareLifetime` is replaced by a fresh dial.
    public static func start(
        listeningOn local: Endpoint,
        remote: Endpoint,
        channel: String,
        provider: TLSContextProvider,
        exitPolicy: PeerPolicy,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(10),
        spareConnections: Int = 0,
        logger: Logger = Logger(label: "vmsync.tunnel.entry"),
        onEvent: @escaping @Sendable (TunnelEvent) -> Void = { _ in }
    ) async throws(TransportError) -> TunnelEntry {
        if let problem = TunnelProtocol.validate(channel) {
            throw TransportError(.invalidArgument, problem)
        }
        let connections = ConnectionSet()
        // Connections open their channels one after another, in the order they were accepted: the exit answers only
        // once it has connected to the target, so the target sees them in the order the client made them (QEMU's
        // parallel migration takes the first connection as the main stream).
        let lastOpening = NIOLockedValueBox<EventLoopFuture<Void>?>(nil)
        // One event loop accepts and sets up every connection of this entry, so they are set up in accept order.
        let loop = group.next()
        @Sendable func dial() -> EventLoopFuture<(any Channel, PeerIdentity)> {
            MutualTLSClient.dial(
                remote, provider: provider, policy: exitPolicy, bootstrap: ClientBootstrap(group: loop),
                connectTimeout: connectTimeout
            )
            .map { ($0.channel, $0.server) }
        }
        let spares = NIOLockedValueBox<[Spare]>([])
        for _ in 0..<max(0, spareConnections) {
            let connection = dial()
            connection.whenSuccess { tls, _ in connections.track(tls) }
            spares.withLockedValue { $0.append(Spare(connection: connection, dialled: .now())) }
        }
        /// A spare if one is fresh enough (a failed or closed one falls back to a new dial), else a new dial.
        @Sendable func connection() -> EventLoopFuture<(any Channel, PeerIdentity)> {
            let spare = spares.withLockedValue { spares -> EventLoopFuture<(any Channel, PeerIdentity)>? in
                while let first = spares.first {
                    spares.removeFirst()
                    if NIODeadline.now() - first.dialled < spareLifetime { return first.connection }
                    first.connection.whenSuccess { tls, _ in ChannelTeardown.finish(tls) }
                }
                return nil
            }
            guard let spare else { return dial() }
            return spare.flatMap { tls, peer in
                tls.isActive ? loop.makeSucceededFuture((tls, peer)) : dial()
            }.flatMapError { _ in dial() }
        }
        let bootstrap = ServerBootstrap(group: loop, childGroup: loop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // Nothing is read from the local client before the tunnel is up.
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { local in
                connections.track(local)
                do {
                    try local.pipeline.syncOperations.addHandler(InputHold())
                } catch {
                    return local.eventLoop.makeFailedFuture(error)
                }
                let opened = local.eventLoop.makePromise(of: Void.self)
                let previous = lastOpening.withLockedValue { last -> EventLoopFuture<Void>? in
                    defer { last = opened.futureResult }
                    return last
                }
                let turn = previous?.hop(to: local.eventLoop) ?? local.eventLoop.makeSucceededVoidFuture()
                let reply = turn.flatMap { connection() }.flatMap { tls, exitPeer in
                    connections.track(tls)
                    return Self.request(channel: channel, on: tls).map { (tls, exitPeer, $0) }
                }
                reply.whenComplete { _ in opened.succeed(()) }
                reply.assumeIsolated().whenComplete { result in
                    switch result {
                    case .success(let (tls, exitPeer, leftover)):
                        Self.join(local: local, tls: tls, leftover: leftover)
                        logger.debug(
                            "tunnel channel opened", metadata: ["channel": "\(channel)", "exit": "\(exitPeer)"])
                        onEvent(.opened(channel: channel, peer: exitPeer))
                    case .failure(let error):
                        let reason = error as? TransportError ?? Handshake.describe(error, peer: "tunnel exit")
                        logger.info(
                            "tunnel channel failed", metadata: ["channel": "\(channel)", "reason": "\(reason)"])
                        onEvent(.refused(channel: channel, error: reason))
                        ChannelTeardown.abort(local)
                    }
                }
                return local.eventLoop.makeSucceededVoidFuture()
            }
        do {
            let listener = try await local.bind(bootstrap)
            return TunnelEntry(
                endpoint: Endpoint.bound(listener, requested: local),
                channel: channel,
                listener: listener,
                connections: connections,
                spares: spares
            )
        } catch {
            throw TransportError(.connectionFailed, "could not listen on \(local): \(error)")
        }
    }

    /// Stops listening and closes every open tunnel (and the spares nobody used).
    public func close() async {
        try? await listener.close()
        for spare in spares.withLockedValue({ spares in
            defer { spares.removeAll() }
            return spares
        }) {
            spare.connection.whenSuccess { tls, _ in ChannelTeardown.finish(tls) }
        }
        await connections.closeAll()
    }

    /// Asks the exit at the other end of `tls` for `channel`; the bytes that came behind its accepting reply.
    static func request(channel: String, on tls: any Channel) -> EventLoopFuture<ByteBuffer> {
        let promise = tls.eventLoop.makePromise(of: ByteBuffer.self)
        do {
            try tls.pipeline.syncOperations.addHandler(ChannelReplyHandler(channel: channel, promise: promise))
            var request = tls.allocator.buffer(capacity: 16 + channel.utf8.count)
            TunnelProtocol.encodeRequest(channel, into: &request)
            tls.writeAndFlush(request, promise: nil)
        } catch {
            promise.fail(error)
            ChannelTeardown.abort(tls)
        }
        return promise.futureResult
    }

    private static func join(local: any Channel, tls: any Channel, leftover: ByteBuffer) {
        guard local.isActive else {
            ChannelTeardown.finish(tls)
            return
        }
        let (localSide, tunnelSide) = GlueHandler.pair()
        do {
            try local.pipeline.syncOperations.addHandler(localSide)
            try tls.pipeline.syncOperations.addHandler(tunnelSide)
        } catch {
            ChannelTeardown.abort(local)
            ChannelTeardown.abort(tls)
            return
        }
        if leftover.readableBytes > 0 {
            local.writeAndFlush(leftover, promise: nil)
        }
        InputHold.release(in: local)
        try? local.syncOptions?.setOption(.autoRead, value: true)
        local.read()
        tls.read()
    }
}

/// Waits for the exit's reply to a channel request, then steps aside.
final class ChannelReplyHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let channel: String
    private let promise: EventLoopPromise<ByteBuffer>
    private var buffer = ByteBuffer()

    init(channel: String, promise: EventLoopPromise<ByteBuffer>) {
        self.channel = channel
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        do {
            guard let reply = try TunnelProtocol.decodeReply(&buffer) else { return }
            if reply.accepted {
                let leftover = buffer
                buffer = ByteBuffer()
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                promise.succeed(leftover)
            } else {
                promise.fail(
                    TransportError(.channelRefused, "the tunnel exit refused channel \"\(channel)\": \(reply.message)"))
                closeSoon(context)
            }
        } catch {
            promise.fail(error)
            closeSoon(context)
        }
    }

    /// Ends the connection on the next event-loop tick, outside TLS's decode loop.
    private func closeSoon(_ context: ChannelHandlerContext) {
        let channel = context.channel
        context.eventLoop.execute { ChannelTeardown.finish(channel) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(Handshake.describe(error, peer: "tunnel exit"))
        ChannelTeardown.abort(context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(
            TransportError(
                .connectionFailed, "the tunnel exit closed the connection before answering for \"\(channel)\"")
        )
        context.fireChannelInactive()
    }
}
