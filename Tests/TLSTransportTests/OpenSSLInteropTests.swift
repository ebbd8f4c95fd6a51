import Foundation
import TestSupport
import Testing

@testable import TLSTransport

/// OpenSSL's command-line tools as the independent TLS implementation.
@Suite("Interoperability with OpenSSL")
struct OpenSSLInteropTests {
    /// A CA and certificates made by the certs/ scripts (openssl CLI).
    struct ScriptPKI {
        let directory: TemporaryDirectory
        var bundle: String { directory.file("ca-bundle.pem") }

        init(cluster: String) async throws {
            directory = try TemporaryDirectory()
            let script = Repository.root.appendingPathComponent("certs/make-ca.sh").path
            let made = try await run("/bin/bash", [script, cluster, directory.path])
            #expect(made.status == 0, "make-ca.sh: \(made.stderr)")
        }

        func issue(role: String, name: String, extra: [String] = []) async throws -> (certificate: String, key: String)
        {
            let script = Repository.root.appendingPathComponent("certs/issue.sh").path
            let issued = try await run("/bin/bash", [script, directory.path, role, name] + extra)
            #expect(issued.status == 0, "issue.sh: \(issued.stderr)")
            let stem = role.hasPrefix("sync-") ? "sync" : name
            return (directory.file("issued/\(role)-\(stem).pem"), directory.file("issued/\(role)-\(stem)-key.pem"))
        }

        func provider(role: String, name: String, extra: [String] = [], versions: TLSVersionPolicy = .tls13)
            async throws
            -> TLSContextProvider
        {
            let files = try await issue(role: role, name: name, extra: extra)
            let identity = try CertifiedKey(
                certificatePEM: try String(contentsOfFile: files.certificate, encoding: .utf8),
                privateKeyPEM: try String(contentsOfFile: files.key, encoding: .utf8)
            )
            let trust = try TrustBundle(pem: try String(contentsOfFile: bundle, encoding: .utf8))
            return try TLSContextProvider(identity: identity, trust: trust, versions: versions)
        }
    }

    @Test(
        "certs/issue.sh refuses a name that would add subject attributes or leave the issued directory; nothing is written"
    )
    func issueRefusesInjectedNames() async throws {
        let pki = try await ScriptPKI(cluster: "ossl")
        let script = Repository.root.appendingPathComponent("certs/issue.sh").path
        for name in [
            "a1/OU=controller", "a1/CN=admin", "../escape", "a1,OU=controller", "A1", "a1 b", "-a1", "a1\\/OU=user", "",
        ] {
            let result = try await run("/bin/bash", [script, pki.directory.path, "node", name])
            #expect(result.status != 0, "\(name) refused: \(result.stdout)")
            #expect(result.stderr.contains("is not a valid name"), "\(name): \(result.stderr)")
        }
        let issued = (try? FileManager.default.contentsOfDirectory(atPath: pki.directory.file("issued"))) ?? []
        #expect(issued.filter { $0.hasSuffix(".pem") }.isEmpty, "nothing issued: \(issued)")
        #expect(
            !FileManager.default.fileExists(atPath: pki.directory.file("escape-key.pem"))
                && !FileManager.default.fileExists(atPath: pki.directory.file("node-..")))
        // A valid name still works, and its subject carries exactly one OU, the role.
        let good = try await pki.issue(role: "node", name: "a1.example")
        let subject = try await run(
            "/usr/bin/openssl", ["x509", "-in", good.certificate, "-noout", "-subject", "-nameopt", "RFC2253"])
        #expect(
            subject.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "subject=CN=a1.example,OU=node,O=ossl",
            "\(subject.stdout)")
    }

    @Test("openssl s_client with openssl-made certificates talks to a TLSTransport server")
    func sClientToServer() async throws {
        let pki = try await ScriptPKI(cluster: "ossl")
        let provider = try await pki.provider(role: "node", name: "srv", extra: ["--ip", "127.0.0.1"])
        let server = try await startReplyServer(provider: provider, policy: PeerPolicy(allowedRoles: [.node]))
        defer { Task { await server.close() } }
        guard case .tcp(_, let port) = server.endpoint else { return }
        let client = try await pki.issue(role: "node", name: "cli")
        let result = try await run(
            opensslPath,
            [
                "s_client", "-connect", "127.0.0.1:\(port)", "-cert", client.certificate, "-key", client.key,
                "-CAfile", pki.bundle, "-verify_return_error", "-quiet",
            ],
            input: "ping\n",
            timeout: 20
        )
        #expect(result.stdout == "node/cli: ping\n", "stderr: \(result.stderr)")
        #expect(result.status == 0)
    }

    @Test("openssl s_client without a client certificate is refused")
    func sClientWithoutCertificate() async throws {
        let pki = try await ScriptPKI(cluster: "ossl")
        let provider = try await pki.provider(role: "node", name: "srv")
        let log = RejectionLog()
        let server = try await startReplyServer(provider: provider, policy: .anyRole, log: log)
        defer { Task { await server.close() } }
        guard case .tcp(_, let port) = server.endpoint else { return }
        let result = try await run(
            opensslPath,
            ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki.bundle, "-quiet"],
            input: "ping\n",
            timeout: 20
        )
        #expect(!result.stdout.contains("ping"))
        #expect(result.stderr.lowercased().contains("certificate required"), "stderr: \(result.stderr)")
        #expect(await eventually { log.codes == [.noPeerCertificate] })
        #expect(log.all.first?.error.message == "the client presented no certificate; this endpoint requires one")
    }

    @Test("a TLSTransport client connects to openssl s_server -Verify, which verifies its certificate")
    func clientToSServer() async throws {
        let alpha = try TestPKI.authority("alpha")
        let directory = try TemporaryDirectory()
        let serverKey = try alpha.issue(LeafRequest(role: .node, name: "srv", ipAddresses: ["127.0.0.1"]))
        let certificate = try directory.write(try serverKey.certificatePEM, to: "srv.pem")
        let key = try directory.write(try serverKey.privateKeyPEM, to: "srv-key.pem")
        let bundle = try directory.write(try TrustBundle([alpha.certificate]).pem, to: "bundle.pem")
        let port = try freePort()
        let server = try ChildProcess(
            opensslPath,
            [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", certificate, "-key", key, "-CAfile", bundle,
                "-Verify", "1", "-verify_return_error", "-rev",
            ]
        )
        #expect(await eventually { isListening(port: port) })
        let client = try TestPKI.provider(alpha, role: .user, name: "alice")
        let (reply, identity) = try await exchange(
            "hello",
            with: .tcp(host: "127.0.0.1", port: port),
            provider: client,
            serverPolicy: PeerPolicy(allowedRoles: [.node])
        )
        #expect(reply == "olleh\n")
        #expect(identity.name == "srv")
        let output = await server.stop()
        #expect(output.contains("Peer certificate: O = alpha, OU = user, CN = alice"), "s_server: \(output)")
        #expect(output.contains("Verification: OK"))
    }

    @Test("openssl s_server that does not trust our CA refuses our client")
    func sServerRefusesUntrusted() async throws {
        let pki = try await ScriptPKI(cluster: "ossl")
        let files = try await pki.issue(role: "sync-server", name: "-", extra: ["--ip", "127.0.0.1"])
        let port = try freePort()
        let server = try ChildProcess(
            opensslPath,
            [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", files.certificate, "-key", files.key,
                "-CAfile", pki.bundle, "-Verify", "1", "-verify_return_error", "-rev",
            ]
        )
        #expect(await eventually { isListening(port: port) })
        let alpha = try TestPKI.authority("alpha")
        // Our client trusts the openssl CA for sync (so it accepts the server's sync identity), but the server does not
        // trust alpha.
        let identity = try alpha.issue(LeafRequest(role: .syncClient, name: "-"))
        let client = try TLSContextProvider(
            identity: identity,
            trust: try TrustBundle(pem: try String(contentsOfFile: pki.bundle, encoding: .utf8))
        )
        let error = await #expect(throws: TransportError.self) {
            try await exchange("hello", with: .tcp(host: "127.0.0.1", port: port), provider: client)
        }
        #expect(error?.code == .rejectedByPeer)
        #expect(error?.message.contains("refused the handshake") == true)
        let output = await server.stop()
        #expect(output.contains("unknown ca") || output.contains("certificate verify failed"), "s_server: \(output)")
    }

    @Test("certificates from the certs/ scripts and from TLSTransport are accepted by each other")
    func crossIssued() async throws {
        let pki = try await ScriptPKI(cluster: "ossl")
        let alpha = try TestPKI.authority("alpha")
        let directory = try TemporaryDirectory()

        // TLSTransport-issued certificates pass `openssl verify` with the right purpose.
        let node = try alpha.issue(LeafRequest(role: .node, name: "n1"))
        let user = try alpha.issue(LeafRequest(role: .user, name: "u1"))
        let caFile = try directory.write(try PEM.encode([alpha.certificate]), to: "alpha.pem")
        let nodeFile = try directory.write(try node.certificatePEM, to: "n1.pem")
        let userFile = try directory.write(try user.certificatePEM, to: "u1.pem")
        for (file, purpose, ok) in [
            (nodeFile, "sslserver", true), (nodeFile, "sslclient", true),
            (userFile, "sslclient", true), (userFile, "sslserver", false),
        ] {
            let verified = try await run(opensslPath, ["verify", "-CAfile", caFile, "-purpose", purpose, file])
            #expect((verified.status == 0) == ok, "\(file) \(purpose): \(verified.stdout) \(verified.stderr)")
        }

        // A server with a TLSTransport certificate imports the openssl CA: it is another cluster's, so it is trusted
        // for the sync roles only. KubeVirt's sync identity made by the script is recognised by its common name.
        let serverProvider = try TestPKI.provider(alpha, role: .syncServer, name: "-")
        var trust = serverProvider.trust
        let decisions = trust.mergeExternal(
            try String(contentsOfFile: pki.bundle, encoding: .utf8), currentCA: alpha.certificate)
        #expect(decisions.filter { $0.action == .added }.count == 1)
        try serverProvider.reload(trust: trust)
        let log = RejectionLog()
        let server = try await startReplyServer(
            provider: serverProvider, policy: PeerPolicy(allowedRoles: [.node, .syncClient]), log: log)
        defer { Task { await server.close() } }

        let syncClient = try await pki.provider(role: "sync-client", name: "-")
        try syncClient.reload(
            trust: TrustBundle([
                alpha.certificate,
                try PEM.certificates(from: String(contentsOfFile: pki.bundle, encoding: .utf8), source: "ossl")[0],
            ]))
        let syncReply = try await exchange(
            "hi", with: server.endpoint, provider: syncClient, serverPolicy: PeerPolicy(allowedRoles: [.syncServer])
        ).reply
        #expect(syncReply == "sync-client/kubevirt.io:system:client:virt-synchronization-controller: hi\n")

        // The script's node certificate is refused: the imported CA cannot mint this cluster's nodes.
        let scriptClient = try await pki.provider(role: "node", name: "ocli")
        try scriptClient.reload(trust: TrustBundle([alpha.certificate]))
        await #expect(throws: TransportError.self) {
            try await exchange("hi", with: server.endpoint, provider: scriptClient)
        }
        #expect(
            await eventually {
                log.all.contains { $0.error.code == .roleNotAllowed && $0.error.message.contains("cluster \"ossl\"") }
            }, "\(log.all)")

        // Nor can it claim this cluster's name: a leaf signed by the openssl CA with O=alpha is refused as such.
        let forgedKey = directory.file("forged-key.pem")
        let forgedRequest = directory.file("forged.csr")
        let forged = directory.file("forged.pem")
        let extensions = try directory.write(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth,serverAuth\n",
            to: "forged.ext")
        for arguments in [
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", forgedKey],
            ["req", "-new", "-key", forgedKey, "-subj", "/O=alpha/OU=node/CN=forged", "-out", forgedRequest],
            [
                "x509", "-req", "-in", forgedRequest, "-CA", pki.directory.file("ca.pem"), "-CAkey",
                pki.directory.file("ca-key.pem"),
                "-CAcreateserial", "-days", "1", "-extfile", extensions, "-out", forged,
            ],
        ] {
            let made = try await run(opensslPath, arguments)
            #expect(made.status == 0, "openssl \(arguments[0]): \(made.stderr)")
        }
        let forgedClient = try TLSContextProvider(
            identity: try CertifiedKey(
                certificatePEM: try String(contentsOfFile: forged, encoding: .utf8),
                privateKeyPEM: try String(contentsOfFile: forgedKey, encoding: .utf8)
            ),
            trust: TrustBundle([alpha.certificate])
        )
        await #expect(throws: TransportError.self) {
            try await exchange("hi", with: server.endpoint, provider: forgedClient)
        }
        #expect(
            await eventually {
                log.all.contains {
                    $0.error.code == .untrustedCertificate && $0.error.message.contains("claims cluster \"alpha\"")
                        && $0.error.message.contains("\"ossl\"")
                }
            }, "\(log.all)")
    }

    @Test("TLS 1.3 by default; TLS 1.2 only when configured")
    func versions() async throws {
        let pki = try await ScriptPKI(cluster: "ossl")
        let client = try await pki.issue(role: "node", name: "cli")
        for versions in [TLSVersionPolicy.tls13, .tls12OrNewer] {
            let provider = try await pki.provider(role: "node", name: "srv", versions: versions)
            let log = RejectionLog()
            let server = try await startReplyServer(provider: provider, policy: .anyRole, log: log)
            guard case .tcp(_, let port) = server.endpoint else { return }
            let result = try await run(
                opensslPath,
                [
                    "s_client", "-tls1_2", "-connect", "127.0.0.1:\(port)", "-cert", client.certificate, "-key",
                    client.key,
                    "-CAfile", pki.bundle, "-quiet",
                ],
                input: "ping\n",
                timeout: 20
            )
            if versions == .tls13 {
                #expect(!result.stdout.contains("ping"))
                #expect(await eventually { log.codes == [.handshakeFailed] })
                #expect(log.all.first?.error.message.contains("no TLS version") == true, "\(log.all)")
            } else {
                #expect(result.stdout == "node/cli: ping\n", "stderr: \(result.stderr)")
            }
            await server.close()
        }
    }
}

/// A TCP port that was free a moment ago.
func freePort() throws -> Int {
    let (socket, port) = try BlockingSocket.listen()
    socket.close()
    return port
}

/// Whether something in this network namespace listens on TCP `port`.
func isListening(port: Int) -> Bool {
    guard let text = readProcFile("/proc/net/tcp") else { return false }
    return text.split(separator: "\n").dropFirst().contains { line in
        let fields = line.split(separator: " ")
        return fields.count > 3 && fields[3] == "0A"
            && Int(fields[1].split(separator: ":").last ?? "", radix: 16) == port
    }
}
