import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The built binaries, next to the test bundle.
let buildDirectory = URL(
    fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/"
)
.deletingLastPathComponent()
let controllerPath = buildDirectory.appendingPathComponent("sync-controller").path
let syncctlPath = buildDirectory.appendingPathComponent("syncctl").path

/// A cluster PKI in a temporary directory and a real `sync-controller` process on a loopback port.
final class ClusterFixture: @unchecked Sendable {
    let directory: String
    let pki: PKIDirectory
    private(set) var controller: ChildProcess?
    private(set) var endpoint: Endpoint = .tcp(host: "127.0.0.1", port: 0)

    init(cluster: String = "alpha") throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("cluster-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        pki = PKIDirectory(url: URL(fileURLWithPath: directory + "/pki"))
        _ = try pki.initialize(cluster: cluster)
        _ = try pki.issue(
            LeafRequest(role: .controller, name: "controller", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]))
        _ = try pki.issue(LeafRequest(role: .user, name: "admin"))
        _ = try pki.issue(LeafRequest(role: .node, name: "a1"))
        _ = try pki.issue(LeafRequest(role: .node, name: "a2"))
    }

    var caPath: String { pki.bundleURL.path }
    func certificate(_ stem: String) -> (cert: String, key: String) {
        ("\(directory)/pki/issued/\(stem).pem", "\(directory)/pki/issued/\(stem)-key.pem")
    }
    var url: String {
        guard case .tcp(let host, let port) = endpoint else { return "" }
        return "https://\(host):\(port)"
    }

    /// Starts the controller (again, on the same data) and waits until it serves.
    func start(_ extra: [String] = []) async throws {
        let (cert, key) = certificate("controller-controller")
        let process = try ChildProcess(
            controllerPath,
            [
                "--data", directory + "/data", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key, "--ca", caPath,
            ] + extra)
        controller = process
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let line = process.stdout.split(separator: "\n").first(where: {
                $0.contains("serving the cluster API on ")
            }),
                let address = line.components(separatedBy: "serving the cluster API on ").last
            {
                endpoint = try Endpoint(parsing: String(address))
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("sync-controller did not start: \(await process.stop())")
        throw CancellationError()
    }

    /// Stops the controller with SIGTERM (graceful) and returns its output.
    @discardableResult
    func stop() async -> String {
        guard let controller else { return "" }
        self.controller = nil
        return await controller.stop()
    }

    /// Kills the controller with SIGKILL.
    func kill9() async {
        guard let controller else { return }
        kill(controller.pid, SIGKILL)
        _ = await controller.wait(timeout: 10)
        self.controller = nil
    }

    /// An API client with the certificate `stem` (e.g. "user-admin", "node-a1").
    func client(_ stem: String = "user-admin") throws -> APIClient {
        let (cert, key) = certificate(stem)
        let identity = try CertifiedKey(
            certificatePEM: String(contentsOfFile: cert, encoding: .utf8),
            privateKeyPEM: String(contentsOfFile: key, encoding: .utf8))
        let provider = try TLSContextProvider(identity: identity, trust: pki.bundle())
        return APIClient(endpoint: endpoint, provider: provider)
    }

    /// curl with a client certificate (`stem`) or none.
    func curl(_ arguments: [String], as stem: String? = "user-admin", input: String = "") async throws -> ProcessResult
    {
        var all = ["-sS", "--max-time", "20", "--cacert", caPath]
        if let stem {
            let (cert, key) = certificate(stem)
            all += ["--cert", cert, "--key", key]
        }
        return try await run("/usr/bin/curl", all + arguments, input: input, timeout: 30)
    }

    /// A kubeconfig for syncctl (written by `syncctl config create`).
    func kubeconfig() async throws -> String {
        let path = directory + "/kubeconfig"
        if !FileManager.default.fileExists(atPath: path) {
            let result = try await run(
                syncctlPath, ["config", "create", "--dir", directory + "/pki", "--server", url, "--output", path])
            #expect(result.status == 0, "\(result.stderr)")
        }
        return path
    }

    func syncctl(_ arguments: [String], input: String = "") async throws -> ProcessResult {
        try await run(syncctlPath, arguments + ["--kubeconfig", try await kubeconfig()], input: input)
    }

    deinit {
        if let controller { kill(controller.pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
