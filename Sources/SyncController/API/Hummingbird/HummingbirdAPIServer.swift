import Hummingbird
import HummingbirdCore
public import Logging
import NIOCore
public import ServiceLifecycle
public import TLSTransport

/// The cluster API served by Hummingbird: an `Application` whose HTTP/1.1 child channel sits behind TLSTransport's
/// mutual TLS (`AuthenticatedHTTPChannel`), with `PeerAuthenticationMiddleware` in front of one catch-all responder
/// for `ClusterAPIHandler`. Behaves as `APIServer` does: the same certificates (hot-reloaded through the provider),
/// role checks, plaintext refusal, handshake and idle timeouts, connection limit, TCP or unix socket.
public final class HummingbirdAPIServer: Service {
    /// Where it listens, as asked (port 0 is reported bound to `run`'s `onListening`).
    public let endpoint: Endpoint
    private let provider: TLSContextProvider
    private let handler: ClusterAPIHandler
    private let logger: Logger
    private let idleTimeout: Duration
    private let handshakeTimeout: Duration
    private let maximumConnections: Int
    private let onListening: @Sendable (Endpoint) async -> Void

    /// A server for `endpoint`; `run` binds and serves. The defaults are `APIServer`'s.
    public init(
        on endpoint: Endpoint, provider: TLSContextProvider, handler: ClusterAPIHandler,
        logger: Logger = Logger(label: "vmsync.apiserver"), idleTimeout: Duration = APIServer.defaultIdleTimeout,
        handshakeTimeout: Duration = .seconds(10), maximumConnections: Int = MutualTLSServer.defaultMaximumConnections,
        onListening: @escaping @Sendable (Endpoint) async -> Void = { _ in }
    ) {
        self.onListening = onListening
        self.endpoint = endpoint
        self.provider = provider
        self.handler = handler
        self.logger = logger
        self.idleTimeout = idleTimeout
        self.handshakeTimeout = handshakeTimeout
        self.maximumConnections = maximumConnections
    }

    /// Binds, reports the bound endpoint to `onListening`, and serves until the task is cancelled or its service group
    /// shuts down (then ends every open connection, watches included). Throws when it cannot listen.
    public func run() async throws {
        let onListening = self.onListening
        let acceptor = MutualTLSAcceptor(
            provider: provider,
            policy: PeerPolicy(allowedRoles: [.user, .node, .controller, .syncClient, .syncServer]),
            logger: logger, handshakeTimeout: Self.amount(handshakeTimeout), maximumConnections: maximumConnections)
        let connections = OpenConnections()
        let idle = Self.amount(idleTimeout)
        let server = HTTPServerBuilder { responder in
            let http = HTTP1Channel(
                responder: { request, writer, channel in
                    try await responder(request, writer, channel)
                    // A watch, or a refused oversized body: the connection ends with its response.
                    if APIConnection.current?.closesAfterResponse == true { channel.close(promise: nil) }
                },
                configuration: HTTP1Channel.Configuration(idleTimeout: idle))
            return AuthenticatedHTTPChannel(http: http, acceptor: acceptor, connections: connections)
        }
        let responder = CallbackResponder<APIRequestContext> { [handler] request, context in
            try await PeerAuthenticationMiddleware().handle(request, context: context) { request, context in
                try await ClusterAPIResponder(handler: handler).respond(to: request, context: context)
            }
        }
        let requested = endpoint
        let address: BindAddress =
            switch requested {
            case .tcp(let host, let port): .hostname(host, port: port)
            case .unix(let path): .unixDomainSocket(path: path)
            }
        let application = Application(
            responder: responder, server: server, configuration: ApplicationConfiguration(address: address),
            onServerRunning: { channel in
                if case .tcp(let host, _) = requested, let port = channel.localAddress?.port {
                    await onListening(.tcp(host: host, port: port))
                } else {
                    await onListening(requested)
                }
            },
            logger: logger)
        // A watch never ends by itself: a shutdown (graceful or not) ends every open connection.
        try await withGracefulShutdownHandler {
            try await withTaskCancellationHandler {
                try await application.run()
            } onCancel: {
                connections.finishAll()
            }
        } onGracefulShutdown: {
            connections.finishAll()
        }
    }

    private static func amount(_ duration: Duration) -> TimeAmount {
        let parts = duration.components
        return .nanoseconds(parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000)
    }
}
