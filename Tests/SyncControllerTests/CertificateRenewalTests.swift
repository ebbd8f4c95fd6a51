import ClusterAPI
import ClusterClient
import Foundation
import NodeAgent
import TLSTransport
import TestSupport
import Testing

/// Node agents renew their certificates through the controller (`CertificateSigningRequest`), never holding the CA key.
@Suite("Certificate renewal through the controller")
struct CertificateRenewalTests {
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

    @Test(
        "a node renews its own certificate: a new key, the same identity and addresses, signed by the cluster CA; one request kept per node; the renewed certificate serves"
    )
    func nodeRenews() async throws {
        let cluster = try ClusterFixture()
        _ = try cluster.pki.issue(LeafRequest(role: .node, name: "a3", ipAddresses: ["127.0.0.1", "10.0.0.3"]))
        try await cluster.start(["--pki", cluster.directory + "/pki", "--leaf-validity", "600"])
        let client = try cluster.client("node-a3")
        let old = try cluster.pki.storedIssue(role: .node, name: "a3")!
        var renewed: [CertifiedKey] = []
        for _ in 0..<2 {
            renewed.append(
                try await CertificateRenewal.renew(
                    through: client, LeafRequest(renewing: old.certificate), cluster: "alpha"))
        }
        for key in renewed {
            let subject = CertificateSubject(key.certificate)
            #expect(subject.role == .node && subject.name == "a3" && subject.cluster == "alpha")
            #expect(LeafRequest(renewing: key.certificate).ipAddresses == ["127.0.0.1", "10.0.0.3"])
            let (newKey, oldKey) = (try key.privateKeyPEM, try old.privateKeyPEM)
            #expect(
                PEM.fingerprint(key.certificate) != PEM.fingerprint(old.certificate) && newKey != oldKey, "a new key")
            let lifetime = key.notValidAfter.timeIntervalSinceNow
            #expect(lifetime > 500 && lifetime <= 600, "the controller's --leaf-validity: \(lifetime)")
        }
        // openssl agrees that the CA signed it for both usages.
        let file = cluster.directory + "/renewed.pem"
        try (try renewed[1].certificatePEM).write(toFile: file, atomically: true, encoding: .utf8)
        for purpose in ["sslclient", "sslserver"] {
            let verified = try await run(
                "/usr/bin/openssl", ["verify", "-CAfile", cluster.caPath, "-purpose", purpose, file])
            #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        }
        // The renewed certificate is accepted by the API; only the latest request of the node is kept, approved.
        let fresh = APIClient(
            endpoint: cluster.endpoint,
            provider: try TLSContextProvider(identity: renewed[1], trust: cluster.pki.bundle()))
        let list = try await fresh.list(Kinds.certificateSigningRequest)["items"]?.array ?? []
        #expect(list.count == 1, "\(list)")
        #expect(
            list.first?["status"]?["conditions"]?.array?.first?["type"] == "Approved"
                && list.first?["spec"]?["username"] == "node:a3")
        #expect(
            list.first?["status"]?["certificate"]?.string
                == Data(try renewed[1].certificatePEM.utf8).base64EncodedString())
    }

    @Test(
        "an openssl-made request posted with curl is signed; requests for another node, another signer, garbage, from a user, or to a controller without the CA are refused with the reason (curl)"
    )
    func requestsChecked() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start(["--pki", cluster.directory + "/pki"])
        func post(_ stem: String, request pem: String, signer: String = "vmsync.io/node") async throws -> (
            code: String, body: String
        ) {
            let body =
                #"{"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest","metadata":{"generateName":"x-"},"spec":{"request":"\#(Data(pem.utf8).base64EncodedString())","signerName":"\#(signer)"}}"#
            let result = try await cluster.curl(
                [
                    "-H", "Content-Type: application/json", "--data-binary", "@-", "-w", "\n%{http_code}",
                    cluster.url + csrs,
                ], as: stem, input: body)
            return (String(result.stdout.split(separator: "\n").last ?? ""), result.stdout)
        }
        // openssl makes the key and the request; the node's own name.
        let key = cluster.directory + "/a1-new-key.pem"
        let csr = cluster.directory + "/a1.csr"
        #expect(
            try await run(
                "/usr/bin/openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]
            ).status == 0)
        #expect(
            try await run(
                "/usr/bin/openssl", ["req", "-new", "-key", key, "-subj", "/O=alpha/OU=node/CN=a1", "-out", csr]
            ).status == 0)
        let signed = try await post("node-a1", request: try String(contentsOfFile: csr, encoding: .utf8))
        #expect(signed.code == "201", "\(signed.body)")
        let object = try JSONValue.parse(
            Data(signed.body.split(separator: "\n").dropLast().joined(separator: "\n").utf8))
        let certificate = String(
            decoding: Data(base64Encoded: object["status"]?["certificate"]?.string ?? "") ?? Data(), as: UTF8.self)
        let file = cluster.directory + "/a1-new.pem"
        try certificate.write(toFile: file, atomically: true, encoding: .utf8)
        let verified = try await run("/usr/bin/openssl", ["verify", "-CAfile", cluster.caPath, file])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        let matches = try await run(
            "/bin/bash",
            ["-c", "[ \"$(openssl x509 -in \(file) -noout -pubkey)\" = \"$(openssl pkey -in \(key) -pubout)\" ]"])
        #expect(matches.status == 0, "the certificate is for the requester's key")

        let other = try SigningRequest.make(for: LeafRequest(role: .node, name: "a2"), cluster: "alpha").pem
        let own = try SigningRequest.make(for: LeafRequest(role: .node, name: "a1"), cluster: "alpha").pem
        let controllerRole = try SigningRequest.make(for: LeafRequest(role: .controller, name: "a1"), cluster: "alpha")
            .pem
        for (stem, pem, signer, code, reason) in [
            ("node-a1", other, "vmsync.io/node", "403", "may request a certificate only for itself"),
            ("node-a1", controllerRole, "vmsync.io/node", "403", "may request a certificate only for itself"),
            ("node-a1", own, "kubernetes.io/kube-apiserver-client", "422", "spec.signerName: Unsupported value"),
            (
                "node-a1", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "vmsync.io/node", "422", "spec.request: Invalid value"
            ),
            ("user-admin", own, "vmsync.io/node", "403", "only node agents renew through the cluster API"),
        ] {
            let result = try await post(stem, request: pem, signer: signer)
            #expect(result.code == code && result.body.contains(reason), "\(stem) \(signer): \(result.body)")
        }
        let stored = try await cluster.client().list(Kinds.certificateSigningRequest)["items"]?.array ?? []
        #expect(stored.count == 1, "only the signed request is stored: \(stored.count)")

        // A controller started without the CA signs nothing.
        await cluster.stop()
        try await cluster.start()
        let refused = try await post("node-a1", request: own)
        #expect(refused.code == "503" && refused.body.contains("without the cluster CA"), "\(refused.body)")
    }

    @Test("the controller renews its own certificate from the CA and writes it back to --cert/--key")
    func controllerRenews() async throws {
        let cluster = try ClusterFixture()
        // A short-lived controller certificate: the renewal point (80% of a 75 s life, backdated 15 s) comes after ~45 s.
        let policy = PKIPolicy(
            caValidity: PKIPolicy.default.caValidity, leafValidity: .seconds(60), renewalFraction: 0.8,
            backdating: .seconds(15))
        _ = try PKIDirectory(url: cluster.pki.url, policy: policy).issue(
            LeafRequest(role: .controller, name: "controller", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]))
        let (certificatePath, keyPath) = cluster.certificate("controller-controller")
        let first = try String(contentsOfFile: certificatePath, encoding: .utf8)
        try await cluster.start(["--pki", cluster.directory + "/pki", "--leaf-validity", "60"])
        guard case .tcp(_, let port) = cluster.endpoint else { return }
        func served() async throws -> String {
            try await run(
                "/bin/sh",
                [
                    "-c",
                    "openssl s_client -connect 127.0.0.1:\(port) -cert \(cluster.certificate("user-admin").cert) -key \(cluster.certificate("user-admin").key) </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
                ]
            ).stdout
        }
        let before = try await served()
        #expect(before.contains("Fingerprint"), "\(before)")
        var after = before
        let deadline = Date().addingTimeInterval(90)
        while after == before, Date() < deadline {
            try await Task.sleep(for: .seconds(2))
            after = try await served()
        }
        #expect(after != before && after.contains("Fingerprint"), "a new certificate is served: \(before) → \(after)")
        let written = try String(contentsOfFile: certificatePath, encoding: .utf8)
        #expect(written != first, "written back to --cert")
        _ = try CertifiedKey(certificatePEM: written, privateKeyPEM: String(contentsOfFile: keyPath, encoding: .utf8))
        let mode = try FileManager.default.attributesOfItem(atPath: keyPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // Clients keep working.
        #expect((try await cluster.client().list(Kinds.node)["items"]?.array) != nil)
    }
}
