import ArgumentParser
import ClusterAPI
import Foundation
import Logging
import Metrics
import MetricsServer
import Prometheus
import ServiceLifecycle
import StateMirror
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
    @Option(
        help:
            "Serve the sync endpoint (KubeVirt's Synchronize gRPC service, mutual TLS) on HOST:PORT for decentralized migrations with other clusters and namespaces; off unless given (KubeVirt's port is 9185)."
    )
    var syncListen: String?
    @Option(
        help:
            "An address peers dial for this cluster's sync endpoint (HOST:PORT; repeatable, e.g. a load balancer in front); published as synchronizationAddresses. Default: --sync-listen, unless it binds every address."
    )
    var advertise: [String] = []
    @Option(help: "The sync endpoint's certificate (role sync-server); issued from --pki when not given.")
    var syncCert: String?
    @Option(help: "Its private key (PEM).") var syncKey: String?
    @Option(
        help: "The certificate for calling peers' sync endpoints (role sync-client); issued from --pki when not given.")
    var syncClientCert: String?
    @Option(help: "Its private key (PEM).") var syncClientKey: String?
    @Option(
        help:
            "Seconds a decentralized migration may wait for its peer (WaitingForSync, Synchronizing, each later step) before it fails naming the peer."
    )
    var syncDeadline = 300
    @Option(
        help:
            "Serve the cross-cluster gateway on HOST:PORT: other clusters' source nodes send this cluster's incoming migration streams here (mutual TLS) and the controller carries them to the target node — one port per cluster. Peers use it once the KubeVirt object's spec.configuration.crossClusterGateway names its address."
    )
    var gatewayListen: String?

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
        guard (1...86_400).contains(syncDeadline) else {
            throw ValidationError("--sync-deadline must be 1…86400 seconds, not \(syncDeadline)")
        }
        if let syncListen {
            guard case .tcp = try? Endpoint(parsing: syncListen) else {
                throw ValidationError("--sync-listen must be HOST:PORT, not \"\(syncListen)\"")
            }
            if syncCert == nil || syncClientCert == nil, pki == nil {
                throw ValidationError(
                    "--sync-listen needs the sync certificates: --sync-cert/--sync-key and --sync-client-cert/--sync-client-key, or --pki to issue them"
                )
            }
            _ = try advertisedAddresses()
        } else if !advertise.isEmpty {
            throw ValidationError("--advertise needs --sync-listen")
        }
    }

    /// The addresses peers are told (`--advertise`, else the listen address when it names one host).
    func advertisedAddresses() throws -> [String] {
        guard let syncListen else { return [] }
        for address in advertise {
            guard case .tcp(_, let port)? = try? Endpoint(parsing: address), port > 0 else {
                throw ValidationError("--advertise must be HOST:PORT, not \"\(address)\"")
            }
        }
        if !advertise.isEmpty { return advertise }
        guard case .tcp(let host, let port)? = try? Endpoint(parsing: syncListen), port > 0,
            !["0.0.0.0", "::", ""].contains(host)
        else {
            throw ValidationError(
                "--sync-listen \(syncListen) names no address a peer can dial: give --advertise HOST:PORT")
        }
        return [syncListen]
    }

    /// The sync endpoint's identity (`server`) or the one that calls peers: from the files given, else issued from the
    /// PKI into the data directory and renewed like the controller's own.
    private func syncIdentity(
        server: Bool, directory: PKIDirectory?, policy: PKIPolicy, trust: TrustBundle, logger: Logger
    ) throws -> (provider: TLSContextProvider, renewal: LeafRenewal?) {
        let (certificate, key) = server ? (syncCert, syncKey) : (syncClientCert, syncClientKey)
        if let certificate {
            let identity = try CertifiedKey(
                certificatePEM: try String(contentsOfFile: certificate, encoding: .utf8),
                privateKeyPEM: try String(contentsOfFile: key ?? certificate, encoding: .utf8))
            return (try TLSContextProvider(identity: identity, trust: trust), nil)
        }
        guard let directory else { throw ValidationError("no sync certificate and no --pki to issue one") }
        let hosts = try advertisedAddresses().compactMap { address -> String? in
            guard case .tcp(let host, _)? = try? Endpoint(parsing: address) else { return nil }
            return host
        }
        let isAddress = { (host: String) in host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." } }
        let request =
            server
            ? LeafRequest(
                role: .syncServer, name: "sync", dnsNames: hosts.filter { !isAddress($0) },
                ipAddresses: hosts.filter(isAddress))
            : LeafRequest(role: .syncClient, name: "sync")
        let name = server ? "sync-server" : "sync-client"
        let (certificatePath, keyPath) = (data + "/\(name).pem", data + "/\(name)-key.pem")
        // Issued afresh at each start: the advertised addresses it names may have changed.
        let identity = try directory.authority().issue(request)
        try identity.write(certificateTo: certificatePath, keyTo: keyPath)
        let provider = try TLSContextProvider(identity: identity, trust: trust)
        let renewal = LeafRenewal(
            request: request, provider: provider, policy: policy,
            onFailure: { logger.warning("\(name) certificate renewal failed; retrying", metadata: ["error": "\($0)"]) }
        ) { request in
            let renewed = try directory.authority().issue(request)
            try renewed.write(certificateTo: certificatePath, keyTo: keyPath)
            return renewed
        }
        return (provider, renewal)
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
            // The sync endpoint and the dialer of peers, when decentralized migration is on.
            var syncServices: [any Service] = []
            var syncRenewals: [LeafRenewal] = []
            var dialer: SyncDialer?
            var endpointProvider: TLSContextProvider?
            let advertised = try advertisedAddresses()
            if syncListen != nil {
                let server = try syncIdentity(
                    server: true, directory: directory, policy: policy, trust: trust, logger: logger)
                let client = try syncIdentity(
                    server: false, directory: directory, policy: policy, trust: trust, logger: logger)
                endpointProvider = server.provider
                syncRenewals += [server.renewal, client.renewal].compactMap { $0 }
                dialer = SyncDialer(provider: client.provider, logger: logger)
            }
            try await ClusterDefaults.publish(synchronizationAddresses: advertised, in: store)
            // kubevirt-ca / kubevirt-external-ca: the bundle every listener and client of the controller follows.
            let clusterTrust = ClusterTrust(pki: directory, bundleFile: ca)
            clusterTrust.follow(provider)
            if let endpointProvider { clusterTrust.follow(endpointProvider) }
            if let dialer { clusterTrust.follow(dialer.provider) }
            try clusterTrust.reload()
            let controllers = ClusterControllers(
                store: store, nodeGracePeriod: .seconds(nodeGracePeriod),
                sync: SyncSettings(advertisedAddresses: advertised, deadline: .seconds(syncDeadline)), dialer: dialer,
                trust: clusterTrust, logger: logger)
            if let syncListen, let endpointProvider, case .tcp(let host, let port) = try Endpoint(parsing: syncListen) {
                let endpoint = try SyncEndpoint(
                    host: host, port: port, provider: endpointProvider, receiver: controllers.syncReceiver,
                    logger: logger
                ) { refused in
                    log.notice("sync peer refused", metadata: ["reason": "\(refused.message)"])
                }
                syncServices.append(endpoint)
                if let dialer { syncServices.append(dialer) }
                print(
                    "sync-controller: serving the sync endpoint on \(syncListen), advertised as \(advertised.joined(separator: ", "))"
                )
            }
            if let gatewayListen {
                syncServices.append(
                    CrossClusterGatewayService(
                        on: try Endpoint(parsing: gatewayListen), provider: provider, controllers: controllers,
                        logger: logger
                    ) { endpoint in
                        print("sync-controller: serving the cross-cluster gateway on \(endpoint)")
                        fflush(nil)
                    })
            }
            // Started in this order, shut down in reverse on SIGTERM/SIGINT: the API servers stop taking requests
            // first, the controllers finish their reconciles, the metrics endpoint goes last.
            var services: [any Service] = []
            if let metricsServer { services.append(metricsServer) }
            services.append(controllers)
            if let renewal { services.append(renewal) }
            services += syncRenewals as [any Service]
            services += syncServices
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
