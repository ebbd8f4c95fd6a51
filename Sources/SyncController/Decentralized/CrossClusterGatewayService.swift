public import Logging
public import ServiceLifecycle
public import TLSTransport

/// The cluster's gateway as a service: it listens only once the controller's caches are loaded (before that every
/// channel would be refused as unknown), then serves until the service group shuts down.
public struct CrossClusterGatewayService: Service {
    let endpoint: Endpoint
    let provider: TLSContextProvider
    let controllers: ClusterControllers
    let logger: Logger
    let onListening: @Sendable (Endpoint) -> Void

    /// Serves the gateway on `endpoint` with `provider` (the controller's identity, which also dials the next hops).
    public init(
        on endpoint: Endpoint, provider: TLSContextProvider, controllers: ClusterControllers, logger: Logger,
        onListening: @escaping @Sendable (Endpoint) -> Void = { _ in }
    ) {
        self.endpoint = endpoint
        self.provider = provider
        self.controllers = controllers
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await controllers.waitForSync() }
        guard !Task.isCancelled, !Task.isShuttingDownGracefully else { return }
        let (gateway, provider, logger) = (controllers.gateway, provider, logger)
        let exit = try await TunnelExit.start(
            on: endpoint, provider: provider, peers: PeerPolicy(allowedRoles: [.node], importedRoles: [.node]),
            routes: TunnelRoutingTable { gateway.route(peer: $0, channel: $1, provider: provider) }, logger: logger
        ) { event in
            if case .refused(let channel, let error) = event {
                logger.notice(
                    "gateway channel refused", metadata: ["channel": "\(channel ?? "-")", "reason": "\(error)"])
            }
        }
        onListening(exit.endpoint)
        await exit.run()
    }
}
