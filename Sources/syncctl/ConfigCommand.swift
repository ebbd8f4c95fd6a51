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
            abstract: "Issue a user certificate from the PKI directory and write a kubeconfig (also usable by kubectl).")
        @OptionGroup var directory: CACommand.DirectoryOption
        @Option(help: "The cluster API, e.g. https://127.0.0.1:8443.") var server: String
        @Option(help: "The user's name (certificate CN).") var user = "admin"
        @Option(help: "The cluster's name in the kubeconfig.") var cluster = "vmsync"
        @Option(help: "The default namespace.") var namespace = "default"
        @Option(help: "Where to write it (default: the syncctl kubeconfig path).") var output: String?

        func run() async throws {
            try await reportingFailures {
                let pki = directory.pki
                let issued = try pki.issue(LeafRequest(role: .user, name: user))
                let ca = try String(contentsOf: pki.bundleURL, encoding: .utf8)
                let document = Kubeconfig.make(
                    cluster: cluster, server: server, caPEM: ca, user: user, certificatePEM: try issued.key.certificatePEM,
                    keyPEM: try issued.key.privateKeyPEM, namespace: namespace)
                let path = Kubeconfig.path(output)
                do {
                    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                } catch {
                    throw CLIError("cannot write \(path): its directory cannot be made (\((error as NSError).localizedFailureReason ?? "\(error)"))")
                }
                // The kubeconfig holds the user's private key.
                try SecretFile.write(Data(YAML.text(document).utf8), to: path, mode: 0o600)
                print("wrote kubeconfig \(path) (cluster \(cluster) at \(server), user \(user))")
            }
        }
    }
}
