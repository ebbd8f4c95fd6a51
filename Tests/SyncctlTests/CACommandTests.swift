import Foundation
import TLSTransport
import TestSupport
import Testing

/// The built `syncctl` binary, next to the test bundle.
let syncctlPath = URL(
    fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/"
)
.deletingLastPathComponent().appendingPathComponent("syncctl").path

/// Runs `syncctl` to completion.
func syncctl(_ arguments: String...) async throws -> ProcessResult {
    try await run(syncctlPath, arguments)
}

func temporaryDirectory() throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent(
        "syncctl-test-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

@Suite("syncctl ca")
struct CACommandTests {
    @Test(
        "config create: a kubeconfig it cannot write is an error in one line, not a success; keys and kubeconfig are 0600 whatever the umask"
    )
    func kubeconfigWrites() async throws {
        let dir = try temporaryDirectory()
        #expect(try await syncctl("ca", "init", "--cluster", "alpha", "--dir", dir).status == 0)
        // A file where the kubeconfig's directory should be: nothing can be written there.
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/blocker"))
        let failed = try await syncctl(
            "config", "create", "--dir", dir, "--server", "https://127.0.0.1:8443", "--output",
            dir + "/blocker/kubeconfig")
        #expect(failed.status != 0, "\(failed.stdout)")
        #expect(!failed.stdout.contains("wrote kubeconfig"), "\(failed.stdout)")
        #expect(
            failed.stderr.hasPrefix("syncctl: cannot write \(dir)/blocker/kubeconfig")
                && failed.stderr.split(separator: "\n").count == 1, "\(failed.stderr)")
        // A directory where the file should be.
        try FileManager.default.createDirectory(atPath: dir + "/taken", withIntermediateDirectories: true)
        let taken = try await syncctl(
            "config", "create", "--dir", dir, "--server", "https://127.0.0.1:8443", "--output", dir + "/taken")
        #expect(taken.status != 0 && !taken.stdout.contains("wrote kubeconfig"), "\(taken.stdout)")
        #expect(taken.stderr.hasPrefix("syncctl: cannot write \(dir)/taken"), "\(taken.stderr)")
        // With umask 000 the secrets are still 0600.
        let made = try await run(
            "/bin/bash",
            [
                "-c", "umask 000; exec \"$0\" \"$@\"", syncctlPath, "config", "create", "--dir", dir, "--server",
                "https://127.0.0.1:8443",
                "--user", "bob", "--output", dir + "/kubeconfig",
            ])
        #expect(made.status == 0, "\(made.stderr)")
        for file in [dir + "/kubeconfig", dir + "/issued/user-bob-key.pem"] {
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(file): \(String(mode ?? 0, radix: 8))")
        }
    }

    @Test(
        "config create without the CA key: from a user certificate issued once (--cert, --key, --ca), or the PKI directory's fresh one; bad credentials are one line"
    )
    func kubeconfigWithoutCAKey() async throws {
        let admin = try temporaryDirectory()
        #expect(try await syncctl("ca", "init", "--cluster", "alpha", "--dir", admin).status == 0)
        #expect(try await syncctl("ca", "issue", "--role", "user", "--name", "alice", "--dir", admin).status == 0)
        #expect(try await syncctl("ca", "issue", "--role", "node", "--name", "n1", "--dir", admin).status == 0)
        // Alice's machine gets her certificate, key and the bundle — never the CA key.
        let home = try temporaryDirectory()
        for file in [
            "issued/user-alice.pem", "issued/user-alice-key.pem", "issued/node-n1.pem", "issued/node-n1-key.pem",
            "ca-bundle.pem",
        ] {
            try FileManager.default.copyItem(
                atPath: "\(admin)/\(file)", toPath: "\(home)/\((file as NSString).lastPathComponent)")
        }
        let made = try await syncctl(
            "config", "create", "--server", "https://127.0.0.1:8443", "--cert", "\(home)/user-alice.pem",
            "--key", "\(home)/user-alice-key.pem", "--ca", "\(home)/ca-bundle.pem", "--output", "\(home)/kubeconfig",
            "--dir", "\(home)/no-pki")
        #expect(
            made.status == 0 && made.stdout.contains("user alice, certificate from \(home)/user-alice.pem"),
            "\(made.stdout)\(made.stderr)")
        let written = try String(contentsOfFile: "\(home)/kubeconfig", encoding: .utf8)
        let certificate = Data(try String(contentsOfFile: "\(home)/user-alice.pem", encoding: .utf8).utf8)
            .base64EncodedString()
        #expect(written.contains(certificate), "the kubeconfig carries the issued certificate itself")
        #expect(
            !FileManager.default.fileExists(atPath: "\(home)/no-pki"),
            "nothing was issued or written into a PKI directory")

        // With the PKI directory: the certificate issued once is reused, not issued again.
        let first = try await syncctl(
            "config", "create", "--dir", admin, "--server", "https://127.0.0.1:8443", "--user", "alice", "--output",
            "\(admin)/k1")
        #expect(
            first.status == 0 && first.stdout.contains("certificate issued earlier"), "\(first.stdout)\(first.stderr)")
        #expect(try String(contentsOfFile: "\(admin)/k1", encoding: .utf8).contains(certificate))
        // A directory without the CA key and without a certificate for the user says what to do.
        let keyless = try await syncctl(
            "config", "create", "--dir", home, "--server", "https://127.0.0.1:8443", "--user", "bob", "--ca",
            "\(home)/ca-bundle.pem")
        #expect(
            keyless.status != 0 && keyless.stderr.contains("nor the CA key")
                && keyless.stderr.contains("--cert and --key"), "\(keyless.stderr)")

        // Bad credentials: one line each, nothing written.
        let other = try temporaryDirectory()
        #expect(try await syncctl("ca", "init", "--cluster", "beta", "--dir", other).status == 0)
        for (arguments, expected) in [
            (
                [
                    "--cert", "\(home)/user-alice.pem", "--key", "\(home)/node-n1-key.pem", "--ca",
                    "\(home)/ca-bundle.pem",
                ], "private key does not match"
            ),
            (
                ["--cert", "\(home)/node-n1.pem", "--key", "\(home)/node-n1-key.pem", "--ca", "\(home)/ca-bundle.pem"],
                "role node"
            ),
            (
                [
                    "--cert", "\(home)/user-alice.pem", "--key", "\(home)/user-alice-key.pem", "--ca",
                    "\(other)/ca-bundle.pem",
                ], "not in the trust bundle"
            ),
            (["--cert", "\(home)/user-alice.pem"], "--cert and --key go together"),
            (
                [
                    "--cert", "\(home)/missing.pem", "--key", "\(home)/user-alice-key.pem", "--ca",
                    "\(home)/ca-bundle.pem",
                ], "cannot read the certificate \(home)/missing.pem"
            ),
            (
                [
                    "--cert", "\(home)/user-alice-key.pem", "--key", "\(home)/user-alice-key.pem", "--ca",
                    "\(home)/ca-bundle.pem",
                ], "not a usable certificate and key"
            ),
        ] {
            let result = try await run(
                syncctlPath,
                [
                    "config", "create", "--server", "https://127.0.0.1:8443", "--output", "\(home)/bad", "--dir",
                    "\(home)/no-pki",
                ] + arguments)
            #expect(
                result.status != 0 && result.stderr.split(separator: "\n").count == 1
                    && result.stderr.contains(expected), "\(arguments): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: "\(home)/bad"))
        }
    }

    @Test("init, issue, show and export; openssl verifies what was issued")
    func lifecycle() async throws {
        let dir = try temporaryDirectory()
        let created = try await syncctl("ca", "init", "--cluster", "alpha", "--dir", dir)
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("created CA"))
        let issued = try await syncctl(
            "ca", "issue", "--role", "node", "--name", "a1", "--ip", "127.0.0.1", "--dns", "a1.local", "--dir", dir)
        #expect(issued.status == 0, "\(issued.stderr)")
        let sync = try await syncctl("ca", "issue", "--role", "sync-server", "--dir", dir)
        #expect(sync.status == 0, "\(sync.stderr)")

        let keyMode =
            try FileManager.default.attributesOfItem(atPath: "\(dir)/issued/node-a1-key.pem")[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
        let caKeyMode = try FileManager.default.attributesOfItem(atPath: "\(dir)/ca-key.pem")[.posixPermissions] as? Int
        #expect(caKeyMode == 0o600)

        let shown = try await syncctl("ca", "show", "--dir", dir)
        #expect(shown.status == 0)
        #expect(shown.stdout.contains("cluster alpha"))
        #expect(shown.stdout.contains("BUNDLE:  1 certificate(s)"))
        #expect(shown.stdout.contains("node         a1"))
        #expect(shown.stdout.contains("sync-server  kubevirt.io:system:node:virt-synchronization-controller"))

        let exported = try await syncctl("ca", "export", "--dir", dir)
        let bundle = try TrustBundle(pem: exported.stdout)
        #expect(bundle.certificates.count == 1)
        try exported.stdout.write(toFile: "\(dir)/exported.pem", atomically: true, encoding: .utf8)
        let verified = try await run(
            "/usr/bin/openssl",
            ["verify", "-CAfile", "\(dir)/exported.pem", "-purpose", "sslserver", "\(dir)/issued/node-a1.pem"])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        let text = try await run(
            "/usr/bin/openssl",
            ["x509", "-in", "\(dir)/issued/node-a1.pem", "-noout", "-subject", "-ext", "subjectAltName"])
        #expect(text.stdout.contains("OU = node"))
        #expect(text.stdout.contains("IP Address:127.0.0.1"))
        #expect(text.stdout.contains("DNS:a1.local"))
    }

    @Test("import-external prints a decision for every entry, merges, and clears the inbox")
    func importExternal() async throws {
        let dir = try temporaryDirectory()
        _ = try await syncctl("ca", "init", "--cluster", "alpha", "--dir", dir)
        let beta = try CertificateAuthority.create(cluster: "beta")
        let old = try CertificateAuthority.create(cluster: "gamma", now: Date().addingTimeInterval(-30 * 24 * 3600))
        let own = try String(contentsOfFile: "\(dir)/ca.pem", encoding: .utf8)
        let mixed = try PEM.encode([beta.certificate]) + own + (try PEM.encode([old.certificate])) + "garbage line\n"
        try mixed.write(toFile: "\(dir)/incoming.pem", atomically: true, encoding: .utf8)

        let result = try await syncctl("ca", "import-external", "\(dir)/incoming.pem", "--dir", dir)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("added: \"CN=vmsync-ca@beta") })
        #expect(lines.contains { $0.hasPrefix("dropped-duplicate: \"CN=vmsync-ca@alpha") })
        #expect(lines.contains { $0.hasPrefix("dropped-expired: \"CN=vmsync-ca@gamma") })
        #expect(lines.contains { $0.hasPrefix("rejected: entry: not PEM: \"garbage line\"") })
        #expect(result.stdout.contains("merged: 1 added, 1 rejected; bundle holds 2 certificate(s); inbox cleared"))
        #expect(try String(contentsOfFile: "\(dir)/external-ca.pem", encoding: .utf8).isEmpty)
        let exported = try await syncctl("ca", "export", "--dir", dir)
        #expect(try TrustBundle(pem: exported.stdout).certificates.count == 2)
    }

    @Test("a bundle made by the certs/ scripts imports, and rotate keeps the old CA trusted")
    func scriptsAndRotation() async throws {
        let dir = try temporaryDirectory()
        let other = try temporaryDirectory()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let made = try await run(
            "/bin/bash", [root.appendingPathComponent("certs/make-ca.sh").path, "ossl", "\(other)/pki"])
        #expect(made.status == 0, "\(made.stderr)")
        _ = try await syncctl("ca", "init", "--cluster", "alpha", "--dir", dir)
        let imported = try await syncctl("ca", "import-external", "\(other)/pki/ca-bundle.pem", "--dir", dir)
        #expect(imported.stdout.contains("added: \"CN=vmsync-ca@ossl"), "\(imported.stdout)\(imported.stderr)")

        let notDue = try await syncctl("ca", "rotate", "--dir", dir)
        #expect(notDue.stdout.contains("not due"))
        let rotated = try await syncctl("ca", "rotate", "--force", "--dir", dir)
        #expect(rotated.status == 0)
        #expect(rotated.stdout.contains("renewed CA"))
        let bundle = try TrustBundle(pem: try await syncctl("ca", "export", "--dir", dir).stdout)
        #expect(bundle.certificates.count == 3, "old alpha, new alpha and ossl")
        // Leaves issued after rotation chain to the new CA, which the bundle holds.
        _ = try await syncctl("ca", "issue", "--role", "user", "--name", "alice", "--dir", dir)
        let verified = try await run(
            "/usr/bin/openssl", ["verify", "-CAfile", "\(dir)/ca.pem", "\(dir)/issued/user-alice.pem"])
        #expect(verified.status == 0)
    }

    @Test(
        "bad input ends with one line on stderr and a non-zero exit",
        arguments: [
            (["ca", "issue", "--role", "admin", "--name", "x"], "unknown role \"admin\""),
            (["ca", "issue", "--role", "node"], "--name is required for role node"),
            (
                ["ca", "issue", "--role", "node", "--name", "n1", "--ip", "999.1.1.1"],
                "\"999.1.1.1\" is not an IPv4 or IPv6 address"
            ),
            (["ca", "show"], "holds no CA"),
            (["ca", "import-external", "/nonexistent/bundle.pem"], "cannot read /nonexistent/bundle.pem"),
            (["ca", "init", "--cluster", "Bad Name"], "cluster name \"Bad Name\""),
        ])
    func badInput(arguments: [String], expected: String) async throws {
        let dir = try temporaryDirectory()
        if arguments.first == "ca" && arguments[1] == "issue" {
            _ = try await syncctl("ca", "init", "--cluster", "alpha", "--dir", dir)
        }
        let result = try await run(syncctlPath, arguments + ["--dir", dir])
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("syncctl: "))
        #expect(result.stderr.contains(expected), "\(result.stderr)")
    }

    @Test("init refuses to overwrite an existing CA")
    func initTwice() async throws {
        let dir = try temporaryDirectory()
        _ = try await syncctl("ca", "init", "--cluster", "alpha", "--dir", dir)
        let again = try await syncctl("ca", "init", "--cluster", "alpha", "--dir", dir)
        #expect(again.status == 1)
        #expect(again.stderr.contains("already holds a CA"))
    }
}
