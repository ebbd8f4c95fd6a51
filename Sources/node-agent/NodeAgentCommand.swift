import ArgumentParser
import ClusterAPI
import ClusterClient
import Foundation
import Logging
import Metrics
import MetricsServer
import NodeAgent
import Prometheus
import ServiceLifecycle
import TLSTransport
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// `node-agent`: one per host.
@main
struct NodeAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-agent", abstract: "The vmsync node daemon: runs the VMIs scheduled to this node.")

    @Option(help: "This node's name (its certificate's CN).") var name: String
    @Option(help: "This node's address.") var address: String
    @Option(help: "The cluster API: https://HOST:PORT or unix:///PATH.") var server: String
    @Option(help: "The node's certificate (PEM, role node).") var cert: String
    @Option(help: "Its private key (PEM).") var key: String
    @Option(help: "The cluster's CA bundle (PEM).") var ca: String
    @Option(help: "The local libvirt URI.") var libvirt = "qemu:///system"
    @Option(help: "Directory for console sockets and scratch disks.") var runDir = "/run/vmsync"
    @Option(help: "Seconds between heartbeats.") var heartbeat = 10
    @Option(help: "Memory offered to VMs, MiB (default: the machine's).") var memoryMiB: UInt64?
    @Option(
        help: "Where the migration tunnel listens for other nodes (HOST:PORT; default: the node's address, port 8444).")
    var tunnelListen: String?
    @Option(help: "Directory for migration sockets; must be the same path on every node.") var migrationDir =
        "/var/lib/vmsync/migrations"
    @Option(help: "Nice value of the threads that carry migration streams (0-19; 0: the agent's own).")
    var tunnelNice: Int32 = 0
    @Option(
        help:
            "Seconds a request to the cluster API may take before it counts as failed (and is retried where it must land)."
    )
    var apiTimeout = 30
    @Option(help: "A directory StorageClass directories may lie under (repeatable; default /var/lib/vmsync).")
    var storageRoot: [String] = []
    @Option(
        help:
            "A directory images (file:// DataVolume sources), kernels and initrds may be taken from (repeatable; default none: images only from their StorageClass directory)."
    )
    var importDir: [String] = []
    @Option(
        help:
            "Serve Prometheus metrics (GET /metrics) over plain HTTP on HOST:PORT; off unless given. No TLS, no authentication: bind it to loopback or a monitoring network."
    )
    var metricsListen: String?

    func validate() throws {
        if let metricsListen {
            do { _ = try ListenAddress(parsing: metricsListen) } catch {
                throw ValidationError("--metrics-listen: \(error)")
            }
        }
    }

    /// The Prometheus backend for every metric the libraries make, with buckets for what a node measures: reconciles
    /// and API calls (swift-prometheus's 5 ms–10 s), migrations (1 s–10 min), their downtime (10 ms–10 s) and the
    /// bytes they send (1 MiB–64 GiB).
    static func metricsFactory(_ registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["vmsync_migration_duration_seconds"] = [
            1, 2, 5, 10, 20, 30, 60, 120, 300, 600,
        ].map { Duration.seconds($0) }
        factory.durationHistogramBuckets["vmsync_migration_downtime_seconds"] = [
            10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000,
        ].map { Duration.milliseconds($0) }
        factory.valueHistogramBuckets["vmsync_migration_data_processed_bytes"] = (0...8).map {
            Double(UInt64(1) << (20 + 2 * $0))
        }
        return factory
    }

    func run() async throws {
        var logger = Logger(label: "vmsync.node-agent")
        logger.logLevel = .info
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(Self.metricsFactory(registry))
        do {
            guard (0...19).contains(tunnelNice) else {
                throw ValidationError("--tunnel-nice must be 0…19, not \(tunnelNice)")
            }
            for directory in storageRoot + importDir where !directory.hasPrefix("/") {
                throw ValidationError("--storage-root and --import-dir take absolute paths, not \(directory)")
            }
            guard (1...3600).contains(apiTimeout) else {
                throw ValidationError("--api-timeout must be 1…3600 seconds, not \(apiTimeout)")
            }
            let endpoint = try APIClient.endpoint(server: server)
            let identity = try CertifiedKey(
                certificatePEM: try String(contentsOfFile: cert, encoding: .utf8),
                privateKeyPEM: try String(contentsOfFile: key, encoding: .utf8))
            let provider = try TLSContextProvider(
                identity: identity, trust: try TrustBundle(pem: try String(contentsOfFile: ca, encoding: .utf8)))
            let client = APIClient(endpoint: endpoint, provider: provider, requestTimeout: .seconds(apiTimeout))
            let tunnel = try Endpoint(
                parsing: tunnelListen ?? (address.contains(":") ? "[\(address)]:8444" : "\(address):8444"))
            let agent = NodeAgent(
                configuration: .init(
                    name: name, address: address, libvirtURI: libvirt, runDirectory: runDir,
                    heartbeatInterval: .seconds(heartbeat), memoryBytes: memoryMiB.map { $0 << 20 },
                    tunnelListen: tunnel, migrationDirectory: migrationDir, tunnelNice: tunnelNice,
                    hostPaths: HostPaths(
                        storageRoots: storageRoot.isEmpty ? HostPaths.defaultStorageRoots : storageRoot,
                        importDirectories: importDir)),
                client: client, provider: provider, logger: logger)
            var metricsServer: MetricsServer?
            if let metricsListen {
                let server = try await MetricsServer.bind(try ListenAddress(parsing: metricsListen), logger: logger) {
                    var bytes: [UInt8] = []
                    registry.emit(into: &bytes)
                    return bytes
                }
                print("node-agent \(name): serving metrics on http://\(server.address)/metrics")
                metricsServer = server
            }
            print("node-agent \(name): starting (libvirt \(libvirt), cluster \(server))")
            fflush(nil)
            // The certificate is renewed through the controller before it expires (and written back to --cert/--key).
            let cluster = CertificateSubject(identity.certificate).cluster ?? ""
            let log = logger
            let (certificatePath, keyPath) = (cert, key)
            let renewal = LeafRenewal(
                request: LeafRequest(renewing: identity.certificate), provider: provider,
                onFailure: { log.warning("certificate renewal failed; retrying", metadata: ["error": "\($0)"]) }
            ) { request in
                let renewed = try await CertificateRenewal.renew(
                    through: client, request, cluster: cluster, certificatePath: certificatePath, keyPath: keyPath)
                log.info("renewed the node certificate", metadata: ["valid-until": "\(renewed.notValidAfter)"])
                return renewed
            }
            // On SIGTERM/SIGINT the agent stops first (outgoing jobs aborted, guests left running), then renewal, then
            // the metrics endpoint (a scrape during the shutdown still sees the last figures).
            var services: [any Service] = []
            if let metricsServer { services.append(metricsServer) }
            services += [renewal, agent] as [any Service]
            let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await group.run()
            print("node-agent \(name): stopped")
        } catch {
            FileHandle.standardError.write(Data("node-agent: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

struct CLIFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
