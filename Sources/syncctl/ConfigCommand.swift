import ArgumentParser
import ClusterAPI
import Foundation
import TLSTransport

/// `syncctl config create`: a kubeconfig for a cluster, with a user certificate from the local PKI.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Write kubeconfig files.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a kubeconfig (also usable by kubectl) with a user certificate.",
            discussion: """
                With --cert and --key (and --ca), the kubeconfig is written from a user certificate issued earlier \
                (`syncctl ca issue --role user --name NAME` on the CA's host): the CA key is not needed. Otherwise the \
                PKI directory's certificate for --user is used when it is still fresh, and issued only when there is \
                none (or it is past its renewal point) and the directory holds the CA key.
                """)
        @OptionGroup var directory: CACommand.DirectoryOption
        @Option(help: "The cluster API, e.g. https://127.0.0.1:8443.") var server: String
        @Option(help: "The user's name (certificate CN).") var user = "admin"
        @Option(help: "The cluster's name in the kubeconfig.") var cluster = "vmsync"
        @Option(help: "The default namespace.") var namespace = "default"
        @Option(help: "Where to write it (default: the syncctl kubeconfig path).") var output: String?
        @Option(help: "An issued user certificate (PEM) to use instead of the PKI directory's.") var cert: String?
        @Option(help: "The private key of --cert (PEM).") var key: String?
        @Option(help: "The cluster's CA bundle (default: the PKI directory's ca-bundle.pem).") var ca: String?

        func run() async throws {
            try await reportingFailures {
                let pki = directory.pki
                let (identity, how) = try credentials(pki)
                let caPEM = try read(ca ?? pki.bundleURL.path, what: "the CA bundle")
                let trust: TrustBundle
                do {
                    trust = try TrustBundle(pem: caPEM)
                } catch let error as TransportError {
                    throw CLIError("the CA bundle \(ca ?? pki.bundleURL.path) is not usable: \(error.message)")
                }
                // The certificate must be one the cluster accepts from a user, now.
                let subject = CertificateSubject(identity.certificate)
                let verifier = PeerVerifier(
                    trust: trust, policy: PeerPolicy(allowedRoles: [.user]), side: .client, homeCluster: subject.cluster
                )
                if case .failure(let error) = await verifier.verify(chain: identity.chain) {
                    throw CLIError("the certificate is not usable in a kubeconfig: \(error.message)")
                }
                let document = Kubeconfig.make(
                    cluster: cluster, server: server, caPEM: caPEM, user: subject.name,
                    certificatePEM: try identity.certificatePEM,
                    keyPEM: try identity.privateKeyPEM, namespace: namespace)
                let path = Kubeconfig.path(output)
                do {
                    try FileManager.default.createDirectory(
                        atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                } catch {
                    throw CLIError(
                        "cannot write \(path): its directory cannot be made (\((error as NSError).localizedFailureReason ?? "\(error)"))"
                    )
                }
                // The kubeconfig holds the user's private key.
                try SecretFile.write(Data(YAML.text(document).utf8), to: path, mode: 0o600)
                print("wrote kubeconfig \(path) (cluster \(cluster) at \(server), user \(subject.name), \(how))")
            }
        }

        /// The user's certificate and key, and how they were obtained.
        private func credentials(_ pki: PKIDirectory) throws -> (CertifiedKey, String) {
            if cert != nil || key != nil {
                guard let cert, let key else { throw CLIError("--cert and --key go together") }
                do {
                    let identity = try CertifiedKey(
                        certificatePEM: try read(cert, what: "the certificate"),
                        privateKeyPEM: try read(key, what: "the key"))
                    return (identity, "certificate from \(cert)")
                } catch let error as TransportError {
                    throw CLIError("\(cert) and \(key) are not a usable certificate and key: \(error.message)")
                }
            }
            let policy = pki.policy
            if let stored = try pki.storedIssue(role: .user, name: user), !policy.needsRenewal(stored.certificate) {
                return (stored, "certificate issued earlier")
            }
            guard pki.holdsCAKey else {
                throw CLIError(
                    "\(pki.url.path) holds neither a fresh certificate for user \"\(user)\" nor the CA key to issue one; "
                        + "pass --cert and --key of a certificate issued with `syncctl ca issue --role user --name \(user)`"
                )
            }
            return (try pki.issue(LeafRequest(role: .user, name: user)).key, "certificate issued now")
        }

        private func read(_ path: String, what: String) throws(CLIError) -> String {
            do {
                return try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw CLIError(
                    "cannot read \(what) \(path): \((error as NSError).localizedFailureReason ?? "no such file")")
            }
        }
    }
}
