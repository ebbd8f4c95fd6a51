import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What the listener under the cluster API does, with each HTTP server the controller can run (`--http-server`):
/// the same answers from curl and openssl over real sockets.
@Suite("Cluster API listener: the hand-written NIO server and Hummingbird alike")
struct HTTPServerTests {
    static let servers = ["nio", "hummingbird"]

    /// The number of watches the controller serves, from its metrics.
    static func watches(_ client: APIClient) async throws -> Int {
        let text = String(decoding: try await client.raw("/metrics"), as: UTF8.self)
        let line = text.split(separator: "\n").first { $0.hasPrefix("vmsync_api_watches ") }
        // swift-prometheus writes a gauge's value as a floating-point number.
        return Double(line?.split(separator: " ").last ?? "").map { Int($0) } ?? -1
    }

    @Test(
        "a watch ends when its client goes, even when no event comes; requests share a kept-alive connection",
        arguments: servers)
    func watchEndsWithClient(server: String) async throws {
        let cluster = try ClusterFixture()
        try await cluster.start(["--http-server", server])
        let admin = try cluster.client()
        let (cert, key) = cluster.certificate("user-admin")
        let watch = try ChildProcess(
            "/usr/bin/curl",
            [
                "-sS", "-N", "--cacert", cluster.caPath, "--cert", cert, "--key", key,
                cluster.url + "/api/v1/namespaces/default/secrets?watch=true",
            ])
        var deadline = Date().addingTimeInterval(10)
        while try await Self.watches(admin) < 1 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await Self.watches(admin) == 1, "the watch is served")
        kill(watch.pid, SIGKILL)
        _ = await watch.wait(timeout: 5)
        deadline = Date().addingTimeInterval(10)
        while try await Self.watches(admin) != 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await Self.watches(admin) == 0, "the watch ended with its connection")

        // Three requests on one curl command: one connection, kept alive between them.
        let kept = try await cluster.curl([
            "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n",
            cluster.url + "/healthz", cluster.url + "/version", cluster.url + "/readyz",
        ])
        #expect(kept.stdout.split(separator: "\n") == ["1", "0", "0"], "\(kept.stdout) \(kept.stderr)")
        await cluster.stop()
    }

    @Test(
        "beyond --max-connections a new connection is closed at once, a plaintext client gets no answer, and the API serves on once connections go",
        arguments: servers)
    func listenerLimits(server: String) async throws {
        let cluster = try ClusterFixture()
        try await cluster.start(["--http-server", server, "--max-connections", "2"])
        guard case .tcp(_, let port) = cluster.endpoint else { return }
        // A plaintext HTTP client: refused before TLS, no HTTP answer.
        let plaintext = try await run(
            "/usr/bin/curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(port)/healthz"], timeout: 20)
        #expect(
            plaintext.status != 0 && plaintext.stdout.isEmpty,
            "\(plaintext.status) \(plaintext.stdout) \(plaintext.stderr)")

        let (cert, key) = cluster.certificate("user-admin")
        let holders = try (0..<2).map { _ in
            try ChildProcess(
                opensslPath,
                [
                    "s_client", "-connect", "127.0.0.1:\(port)", "-cert", cert, "-key", key, "-CAfile", cluster.caPath,
                    "-quiet", "-ign_eof",
                ])
        }
        defer { for holder in holders { kill(holder.pid, SIGKILL) } }
        // Both hold their connection once their handshakes are through.
        try await Task.sleep(for: .seconds(1))
        let started = Date()
        let refused = try await cluster.curl(["-w", "\n%{http_code}", cluster.url + "/healthz"])
        #expect(
            refused.status != 0 && !refused.stdout.contains("ok"),
            "the third connection is refused: \(refused.stdout) \(refused.stderr)")
        #expect(Date().timeIntervalSince(started) < 5, "at once, not after a timeout")
        for holder in holders {
            kill(holder.pid, SIGKILL)
            _ = await holder.wait(timeout: 5)
        }
        var served = try await cluster.curl([cluster.url + "/healthz"])
        let deadline = Date().addingTimeInterval(10)
        while served.stdout != "ok" && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            served = try await cluster.curl([cluster.url + "/healthz"])
        }
        #expect(served.stdout == "ok", "\(served.stdout) \(served.stderr)")
        await cluster.stop()
    }

    @Test("a unix-socket listener serves the API (curl --unix-socket, the API client)", arguments: servers)
    func unixSocket(server: String) async throws {
        let cluster = try ClusterFixture()
        let socket = cluster.directory + "/api.sock"
        // Beside the fixture's TCP listener.
        try await cluster.start(["--http-server", server, "--listen", "unix:" + socket])
        let deadline = Date().addingTimeInterval(10)
        while !(cluster.controller?.stdout ?? "").contains("serving the cluster API on unix:\(socket)")
            && Date() < deadline
        {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect((cluster.controller?.stdout ?? "").contains("serving the cluster API on unix:\(socket)"))
        let (cert, key) = cluster.certificate("user-admin")
        let health = try await run(
            "/usr/bin/curl",
            [
                "-sS", "--max-time", "10", "--unix-socket", socket, "--cacert", cluster.caPath, "--cert", cert, "--key",
                key, "https://localhost/healthz",
            ])
        #expect(health.stdout == "ok", "\(health.stdout) \(health.stderr)")
        let identity = try CertifiedKey(
            certificatePEM: String(contentsOfFile: cert, encoding: .utf8),
            privateKeyPEM: String(contentsOfFile: key, encoding: .utf8))
        let admin = APIClient(
            endpoint: .unix(path: socket),
            provider: try TLSContextProvider(identity: identity, trust: cluster.pki.bundle()))
        _ = try await admin.create(
            Kinds.configMap,
            ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "over-unix"], "data": ["k": "v"]])
        #expect(try await admin.get(Kinds.configMap, name: "over-unix")["data"]?["k"] == "v")
        await cluster.stop()
    }
}
