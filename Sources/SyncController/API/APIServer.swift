import ClusterAPI
import Foundation
public import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
public import TLSTransport

/// The cluster API over HTTPS with mutual TLS: `MutualTLSServer` authenticates each client by its certificate, then
/// HTTP/1.1 requests on the connection go to `ClusterAPIHandler` one after another (keep-alive); a watch streams its
/// events as chunked JSON lines until the client goes.
///
/// As a service it serves until the service group shuts down (or the task is cancelled), then stops listening.
public final class APIServer: Service {
    /// Where it listens.
    public let endpoint: Endpoint
    private let listener: MutualTLSServer
    private let connections: AsyncStream<Connection>
    private let handler: ClusterAPIHandler
    private let logger: Logger
    /// Open connections, closed when serving stops.
    private let open = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    struct Connection: @unchecked Sendable {
        let channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
        let peer: PeerIdentity
        /// When the client's input ends or the connection closes.
        let inputEnded: EventLoopFuture<Void>
    }

    private init(
        endpoint: Endpoint, listener: MutualTLSServer, connections: AsyncStream<Connection>, handler: ClusterAPIHandler,
        logger: Logger
    ) {
        self.endpoint = endpoint
        self.listener = listener
        self.connections = connections
        self.handler = handler
        self.logger = logger
    }

    /// Listens on `endpoint`; `run()` serves.
    /// How long a connection may wait between requests, or within one, before it is closed. A client that has not
    /// completed its handshake within `handshakeTimeout` is closed, and beyond `maximumConnections` a new connection
    /// is closed at once.
    public static let defaultIdleTimeout = Duration.seconds(120)

    public static func start(
        on endpoint: Endpoint, provider: TLSContextProvider, handler: ClusterAPIHandler,
        logger: Logger = Logger(label: "vmsync.apiserver"), idleTimeout: Duration = defaultIdleTimeout,
        handshakeTimeout: Duration = .seconds(10), maximumConnections: Int = MutualTLSServer.defaultMaximumConnections
    ) async throws(TransportError) -> APIServer {
        let (connections, continuation) = AsyncStream.makeStream(of: Connection.self)
        func amount(_ duration: Duration) -> TimeAmount {
            let parts = duration.components
            return .nanoseconds(parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000)
        }
        let idle = amount(idleTimeout)
        let policy = PeerPolicy(allowedRoles: [.user, .node, .controller, .syncClient, .syncServer])
        let listener = try await MutualTLSServer.start(
            on: endpoint, provider: provider, policy: policy, logger: logger,
            handshakeTimeout: amount(handshakeTimeout), maximumConnections: maximumConnections
        ) { channel, peer in
            channel.eventLoop.makeCompletedFuture {
                // Ahead of the HTTP handlers, which hold a FIN back while a response is pending.
                let inputEnd = InputEndHandler(eventLoop: channel.eventLoop)
                try channel.pipeline.syncOperations.addHandler(inputEnd)
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(IdleRequestTimeout(timeout: idle))
                let wrapped = try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                    wrappingChannelSynchronously: channel)
                continuation.yield(Connection(channel: wrapped, peer: peer, inputEnded: inputEnd.ended))
            }
        }
        return APIServer(
            endpoint: listener.endpoint, listener: listener, connections: connections, handler: handler, logger: logger)
    }

    /// Serves until graceful shutdown or cancellation: then every open connection is closed (watches included) and
    /// the listener stops.
    public func run() async {
        await cancelWhenGracefulShutdown { await self.serveConnections() }
        await close()
    }

    /// Serves connections until the task is cancelled (then closes every open connection, watches included); each
    /// connection handles its own errors.
    private func serveConnections() async {
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                for await connection in connections {
                    let channel = connection.channel.channel
                    open.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
                    group.addTask {
                        await self.serve(connection)
                        _ = self.open.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
                    }
                }
            }
        } onCancel: {
            // close_notify and FIN to each client (a plain close would wait out NIOSSL's shutdown timeout).
            for channel in open.withLockedValue({ $0.values }) { ChannelTeardown.finish(channel) }
        }
    }

    /// Stops listening.
    public func close() async {
        await listener.close()
    }

    private func serve(_ connection: Connection) async {
        do {
            try await connection.channel.executeThenClose { inbound, outbound in
                var requests = inbound.makeAsyncIterator()
                while let part = try await requests.next() {
                    guard case .head(let head) = part else { continue }
                    var body = ByteBuffer()
                    var tooLarge = false
                    reading: while let part = try await requests.next() {
                        switch part {
                        case .body(var chunk):
                            if body.readableBytes + chunk.readableBytes > ClusterAPIHandler.maximumBodyBytes {
                                tooLarge = true
                            } else {
                                body.writeBuffer(&chunk)
                            }
                        case .end: break reading
                        case .head: break reading
                        }
                    }
                    let request = APIRequest(
                        method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name, $0.value) },
                        body: Data(body.readableBytesView), peer: connection.peer)
                    let response: APIResponse =
                        tooLarge
                        ? .error(
                            APIError(
                                .requestEntityTooLarge, code: 413,
                                "the request body is larger than \(ClusterAPIHandler.maximumBodyBytes) bytes"))
                        : await handler.handle(request)
                    let keepAlive = head.isKeepAlive && !tooLarge
                    switch response {
                    case .full(let status, let contentType, let data):
                        var headers = HTTPHeaders([
                            ("Content-Type", contentType), ("Content-Length", String(data.count)),
                        ])
                        if !keepAlive { headers.add(name: "Connection", value: "close") }
                        try await outbound.write(
                            .head(
                                HTTPResponseHead(
                                    version: head.version, status: .init(statusCode: status), headers: headers)))
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: data))))
                        try await outbound.write(.end(nil))
                        if !keepAlive { return }
                    case .stream(let status, let contentType, let lines):
                        let headers = HTTPHeaders([
                            ("Content-Type", contentType), ("Transfer-Encoding", "chunked"), ("Connection", "close"),
                        ])
                        try await outbound.write(
                            .head(
                                HTTPResponseHead(
                                    version: head.version, status: .init(statusCode: status), headers: headers)))
                        // The watch ends when its stream does, when a write fails, or when the client goes (its input
                        // ends, or the connection closes).
                        try await lines.run(endingWhen: connection.inputEnded) { lines in
                            for await line in lines {
                                try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: line))))
                            }
                            try await outbound.write(.end(nil))
                        }
                        return
                    }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["peer": "\(connection.peer)", "error": "\(error)"])
        }
    }
}

/// Closes a connection that stays silent too long while the server waits for it: between requests (kept alive) and
/// within one (a head without its body). While a response is written — a watch may stream for its whole
/// `timeoutSeconds` — it never fires.
final class IdleRequestTimeout: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) {
            // The request is complete: the server answers now; the clock waits for the answer's end.
            timer?.cancel()
            timer = nil
        } else {
            arm(context)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }
}
