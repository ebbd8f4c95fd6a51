import ArgumentParser
import ClusterAPI
import Foundation
import Logging
import Metrics
import MetricsServer
import Prometheus
import ServiceLifecycle
import SyncController
import TLSTransport
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// Which HTTP server serves the cluster API.
enum HTTPServerKind: String, ExpressibleByArgument, CaseIterable {
    /// `APIServer`: HTTP/1.1 written by hand on NIO.
    case nio
    /// `HummingbirdAPIServer`: Hummingbird's HTTP/1.1 server and middleware.
    case hummingbird

    /// `VMSYNC_HTTP_SERVER` when set (a whole test run on one server), else `nio`.
    static var standard: HTTPServerKind {
        ProcessInfo.processInfo.environment["VMSYNC_HTTP_SERVER"].flatMap(HTTPServerKind.init(rawValue:)) ?? .nio
    }
}

/// `sync-controller`: one per cluster. Holds the cluster's resources in SQLite and serves the cluster API over
/// mutual TLS.
@main
struct SyncControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync-controller", abstract: "The vmsync cluster controller: resource store and cluster API.")

    @Option(help: "Directory for the store (cluster.sqlite).") var data: String
    @Option(help: "Address to serve the cluster API on (host:port, or unix:PATH); repeatable.") var listen: [String] = [
        "127.0.0.1:8443"
    ]
    @Option(help: "The controller's certificate (PEM, role controller).") var cert: String
    @Option(help: "Its private key (PEM).") var key: String
    @Option(help: "The cluster's CA bundle (PEM).") var ca: String
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"
    @Option(help: "Changes kept for watches to resume from; older resourceVersions get 410 Gone.") var retainChanges:
        Int64 = 100_000
    @Option(help: "Seconds without a heartbeat after which a node is NotReady.") var nodeGracePeriod = 40
    @Option(help: "Seconds a client connection may stay silent between requests (or within one) before it is closed.")
    var idleTimeout = 120
    @Option(help: "Seconds a client may take to complete its TLS handshake.") var handshakeTimeout = 10
    @Option(help: "Connections each listener holds at most; more are closed at once.") var maxConnections = 1024
    @Option(
        help:
            "The cluster's PKI directory (ca.pem, ca-key.pem): the controller then renews its own certificate and signs the node agents' renewals."
    )
    var pki: String?
    @Option(help: "Lifetime in seconds of the certificates the controller issues (its own and the nodes' renewals).")
    var leafValidity = 86_400
    @Option(
        help:
            "Serve Prometheus metrics (GET /metrics) over plain HTTP on HOST:PORT; off unless given. No TLS, no authentication: bind it to loopback or a monitoring network."
    )
    var metricsListen: String?
    @Option(
        help:
            "The HTTP server under the cluster API: nio (the hand-written one) or hummingbird; VMSYNC_HTTP_SERVER sets the default."
    )
    var httpServer = HTTPServerKind.standard

    func validate() throws {
        guard (1...86_400).contains(idleTimeout) else {
            throw ValidationError("--idle-timeout must be 1…86400 seconds, not \(idleTimeout)")
        }
        guard (1...600).contains(handshakeTimeout) else {
            throw ValidationError("--handshake-timeout must be 1…600 seconds, not \(handshakeTimeout)")
        }
        guard (1...1_000_000).contains(maxConnections) else {
            throw ValidationError("--max-connections must be 1…1000000, not \(maxConnections)")
        }
        guard (60...31_536_000).contains(leafValidity) else {
            throw ValidationError("--leaf-validity must be 60…31536000 seconds, not \(leafValidity)")
        }
        if let metricsListen {
            do { _ = try ListenAddress(parsing: metricsListen) } catch {
                throw ValidationError("--metrics-listen: \(error)")
            }
        }
    }

    func run() async throws {
        #if canImport(Glibc)
            // At most two malloc arenas unless MALLOC_ARENA_MAX says otherwise: glibc's default (8 per core) keeps what
            // a large list answer freed in each thread's arena; capped, the controller holding 10,000 objects sits at
            // 94 MiB instead of 112 (vmsync-bench controlplane).
            // (mallopt is in malloc.h, which the Glibc module leaves out; M_ARENA_MAX is -8 there.)
            if ProcessInfo.processInfo.environment["MALLOC_ARENA_MAX"] == nil, let symbol = dlsym(nil, "mallopt") {
                typealias MallOpt = @convention(c) (Int32, Int32) -> Int32
                _ = unsafeBitCast(symbol, to: MallOpt.self)(-8, 2)
            }
        #endif
        var logger = Logger(label: "vmsync.sync-controller")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        // Every metric the libraries make from here on lands in this registry (the buckets are swift-prometheus's
        // defaults, 5 ms to 10 s: reconciles and API requests).
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        do {
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let identity = try CertifiedKey(
                certificatePEM: try String(contentsOfFile: cert, encoding: .utf8),
                privateKeyPEM: try String(contentsOfFile: key, encoding: .utf8))
            let trust = try TrustBundle(pem: try String(contentsOfFile: ca, encoding: .utf8))
            let provider = try TLSContextProvider(identity: identity, trust: trust)
            let store = try SQLiteStore(path: data + "/cluster.sqlite", retainedChanges: retainChanges)
            try await ClusterDefaults.ensure(in: store)
            // With the CA at hand the controller signs: its own renewals and the agents'.
            let policy = PKIPolicy.leaves(validFor: leafValidity)
            let directory = pki.map { PKIDirectory(url: URL(fileURLWithPath: $0), policy: policy) }
            if let directory { _ = try directory.authority() }
            let log = logger
            // `/metrics` on the cluster API (mutual TLS) and on `--metrics-listen` (plain HTTP) answer the same.
            let storeMetrics = StoreMetrics(store: store)
            let exposition: @Sendable () async -> [UInt8] = {
                await storeMetrics.sample()
                var bytes: [UInt8] = []
                registry.emit(into: &bytes)
                return bytes
            }
            let handler = ClusterAPIHandler(
                store: store, signer: directory.map { CertificateSigner(pki: $0) }, exposition: exposition)
            let (certificatePath, keyPath) = (cert, key)
            let renewal = directory.map { directory in
                LeafRenewal(
                    request: LeafRequest(renewing: identity.certificate), provider: provider, policy: policy,
                    onFailure: { log.warning("certificate renewal failed; retrying", metadata: ["error": "\($0)"]) }
                ) { request in
                    let renewed = try directory.authority().issue(request)
                    try renewed.write(certificateTo: certificatePath, keyTo: keyPath)
                    log.info(
                        "renewed the controller certificate", metadata: ["valid-until": "\(renewed.notValidAfter)"])
                    return renewed
                }
            }
            var servers: [APIServer] = []
            var hummingbirds: [HummingbirdAPIServer] = []
            for address in listen {
                let endpoint = try Endpoint(parsing: address)
                switch httpServer {
                case .nio:
                    let server = try await APIServer.start(
                        on: endpoint, provider: provider, handler: handler, logger: logger,
                        idleTimeout: .seconds(idleTimeout),
                        handshakeTimeout: .seconds(handshakeTimeout), maximumConnections: maxConnections)
                    print("sync-controller: serving the cluster API on \(server.endpoint)")
                    servers.append(server)
                case .hummingbird:
                    hummingbirds.append(
                        HummingbirdAPIServer(
                            on: endpoint, provider: provider, handler: handler, logger: logger,
                            idleTimeout: .seconds(idleTimeout),
                            handshakeTimeout: .seconds(handshakeTimeout), maximumConnections: maxConnections
                        ) { endpoint in
                            print("sync-controller: serving the cluster API on \(endpoint)")
                            fflush(nil)
                        })
                }
            }
            var metricsServer: MetricsServer?
            if let metricsListen {
                let server = try await MetricsServer.bind(
                    try ListenAddress(parsing: metricsListen), logger: logger, render: exposition)
                print("sync-controller: serving metrics on http://\(server.address)/metrics")
                metricsServer = server
            }
            fflush(nil)
            let controllers = ClusterControllers(
                store: store, nodeGracePeriod: .seconds(nodeGracePeriod), logger: logger)
            // Started in this order, shut down in reverse on SIGTERM/SIGINT: the API servers stop taking requests
            // first, the controllers finish their reconciles, the metrics endpoint goes last.
            var services: [any Service] = []
            if let metricsServer { services.append(metricsServer) }
            services.append(controllers)
            if let renewal { services.append(renewal) }
            services += servers as [any Service]
            services += hummingbirds as [any Service]
            let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await group.run()
            print("sync-controller: stopped")
        } catch {
            FileHandle.standardError.write(Data("sync-controller: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}
