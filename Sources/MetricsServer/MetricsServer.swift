public import Logging
import NIOConcurrencyHelpers
public import NIOCore
public import NIOHTTP1
import NIOPosix
public import ServiceLifecycle

/// A daemon's `/metrics` over plain HTTP/1.1 (`--metrics-listen`): `GET /metrics` answers with what `render` produces
/// — the Prometheus text exposition of the registry the executable owns — and anything else with 404 or 405.
///
/// Plain HTTP, no authentication: meant for loopback or a monitoring network. What a client can make it hold is
/// bounded: the request head (`headLimits`), the body (`MetricsRequestHandler.maximumBodyBytes`), the time a request
/// may take to arrive (`requestTimeout`) and the number of open connections (`maximumConnections`).
///
/// Each connection's pipeline is NIO's HTTP/1.1 codec, `RequestTimeout` and `MetricsRequestHandler` (which answers
/// what is refused and passes on the heads of scrapes); an `NIOAsyncChannel` per connection answers the scrapes, as
/// child tasks of `run()`.
public final class MetricsServer: Service {
    /// Where it listens (with the port the system chose when asked for port 0).
    public let address: ListenAddress
    private let listener: NIOAsyncChannel<NIOAsyncChannel<HTTPRequestHead, HTTPServerResponsePart>, Never>
    private let render: @Sendable () async -> [UInt8]
    private let maximumConnections: Int
    private let logger: Logger

    private init(
        address: ListenAddress,
        listener: NIOAsyncChannel<NIOAsyncChannel<HTTPRequestHead, HTTPServerResponsePart>, Never>,
        render: @escaping @Sendable () async -> [UInt8], maximumConnections: Int, logger: Logger
    ) {
        self.address = address
        self.listener = listener
        self.render = render
        self.maximumConnections = maximumConnections
        self.logger = logger
    }

    /// The limits on what one request head may hold: the URI and each header at most 8 KiB, all of them 16 KiB, at
    /// most 64 header fields. A larger head is answered with 400 and the connection closed.
    public static let headLimits: NIOHTTPDecoderLimitConfiguration = {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 8 << 10
        limits.maxHeaderListSize = 16 << 10
        limits.maxHeaderFieldCount = 64
        return limits
    }()

    /// The exposition's content type (Prometheus text format 0.0.4).
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Sets up a connection's pipeline (on its event loop): the HTTP codec with `headLimits` (400 for what it cannot
    /// parse), the request deadline and the request handler.
    public static func configure(_ channel: any Channel, requestTimeout: TimeAmount) throws {
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withErrorHandling: true, withEncoderConfiguration: .init(), withDecoderLimitConfiguration: headLimits)
        try channel.pipeline.syncOperations.addHandler(RequestTimeout(timeout: requestTimeout))
        try channel.pipeline.syncOperations.addHandler(MetricsRequestHandler())
    }

    /// Binds `address`; call `run()` to serve. `render` makes the exposition for each scrape.
    public static func bind(
        _ address: ListenAddress, logger: Logger = Logger(label: "vmsync.metrics"),
        requestTimeout: TimeAmount = .seconds(30),
        maximumConnections: Int = 64, render: @escaping @Sendable () async -> [UInt8]
    ) async throws -> MetricsServer {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configure(channel, requestTimeout: requestTimeout)
                    return try NIOAsyncChannel<HTTPRequestHead, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        let port = listener.channel.localAddress?.port ?? address.port
        return MetricsServer(
            address: ListenAddress(host: address.host, port: port), listener: listener, render: render,
            maximumConnections: max(1, maximumConnections), logger: logger)
    }

    /// Serves until the task is cancelled or its service group shuts down; then stops listening and closes every open
    /// connection. Past `maximumConnections` open ones, a new connection is closed at once.
    public func run() async {
        await cancelWhenGracefulShutdown { await self.serve() }
    }

    private func serve() async {
        let open = NIOLockedValueBox(0)
        await withDiscardingTaskGroup { group in
            await withTaskCancellationHandler {
                do {
                    try await listener.executeThenClose { inbound in
                        for try await connection in inbound {
                            let admitted = open.withLockedValue { count -> Bool in
                                guard count < maximumConnections else { return false }
                                count += 1
                                return true
                            }
                            guard admitted else {
                                logger.debug(
                                    "metrics connection refused: too many open",
                                    metadata: ["limit": "\(maximumConnections)"])
                                try? await connection.channel.close()
                                continue
                            }
                            group.addTask {
                                await self.serve(connection)
                                open.withLockedValue { $0 -= 1 }
                            }
                        }
                    }
                } catch  where !Task.isCancelled {
                    logger.warning("metrics listener failed", metadata: ["address": "\(address)", "error": "\(error)"])
                } catch {
                    // Stopped.
                }
            } onCancel: {
                listener.channel.close(promise: nil)
            }
            group.cancelAll()
        }
    }

    /// Answers the scrapes of one connection (the handlers answered the rest) until it closes; its errors end only it.
    private func serve(_ connection: NIOAsyncChannel<HTTPRequestHead, HTTPServerResponsePart>) async {
        do {
            // Cancelled (the server stops): the connection closes, which ends the loop below.
            try await withTaskCancellationHandler {
                try await answer(connection)
            } onCancel: {
                connection.channel.close(promise: nil)
            }
        } catch {
            logger.debug("metrics connection ended", metadata: ["error": "\(error)"])
        }
    }

    private func answer(_ connection: NIOAsyncChannel<HTTPRequestHead, HTTPServerResponsePart>) async throws {
        try await connection.executeThenClose { scrapes, responses in
            for try await head in scrapes {
                let body = ByteBuffer(bytes: await render())
                var headers = HTTPHeaders([
                    ("Content-Type", Self.contentType), ("Content-Length", String(body.readableBytes)),
                ])
                if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
                try await responses.write(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers)))
                // The encoder leaves out the body of an answer to HEAD.
                try await responses.write(.body(.byteBuffer(body)))
                try await responses.write(.end(nil))
                if !head.isKeepAlive { return }
            }
        }
    }
}

/// `HOST:PORT` (`[v6]:PORT` for an IPv6 address) for `--metrics-listen`.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; the error says what is wrong with `text`.
    public init(parsing text: String) throws(ListenAddressError) {
        guard let colon = text.lastIndex(of: ":") else {
            throw ListenAddressError(description: "\"\(text)\" is not HOST:PORT")
        }
        guard let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ListenAddressError(description: "\"\(text)\" has no port from 0 to 65535")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            throw ListenAddressError(description: "\"\(text)\": write an IPv6 address in brackets, [ADDRESS]:PORT")
        }
        guard !host.isEmpty else { throw ListenAddressError(description: "\"\(text)\" names no host") }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A `--metrics-listen` value that is not `HOST:PORT`.
public struct ListenAddressError: Error, CustomStringConvertible {
    public let description: String
}
