import ArgumentParser
import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport
import X509

/// `syncctl ca …`: the cluster's certificate authority kept in a local directory.
struct CACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Create and inspect the cluster CA, issue role certificates, exchange CA bundles.",
        subcommands: [Init.self, Issue.self, Show.self, Export.self, Import.self, ImportExternal.self, Rotate.self]
    )

    struct DirectoryOption: ParsableArguments {
        @Option(name: .long, help: "PKI directory (default: $XDG_CONFIG_HOME/vmsync/pki or ~/.config/vmsync/pki).")
        var dir: String?

        var pki: PKIDirectory {
            PKIDirectory(url: dir.map { URL(fileURLWithPath: $0) } ?? PKIDirectory.defaultURL)
        }
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a new cluster CA (ECDSA P-256, 7 days).")
        @OptionGroup var directory: DirectoryOption
        @Option(help: "The cluster's name (written as the CA's O).") var cluster: String

        func run() throws {
            try reportingErrors {
                let authority = try directory.pki.initialize(cluster: cluster)
                print("created CA \"\(authority.certificate.subject)\" in \(directory.pki.url.path)")
                print("valid until \(authority.certificate.notValidAfter.formatted(.iso8601))")
            }
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a certificate for a role (24 h).")
        @OptionGroup var directory: DirectoryOption
        @Option(help: "controller, node, user, sync-client or sync-server.") var role: String
        @Option(help: "The holder's name (CN); fixed by KubeVirt for the sync roles.") var name: String?
        @Option(name: .customLong("dns"), help: "A DNS name to serve (repeatable).") var dnsNames: [String] = []
        @Option(name: .customLong("ip"), help: "An IP address to serve (repeatable).") var ipAddresses: [String] = []

        func run() throws {
            try reportingErrors {
                let role = try PeerRole(parsing: role)
                guard let name = name ?? role.fixedCommonName else {
                    throw TransportError(.invalidArgument, "--name is required for role \(role.rawValue)")
                }
                let request = LeafRequest(role: role, name: name, dnsNames: dnsNames, ipAddresses: ipAddresses)
                let issued = try directory.pki.issue(request)
                print("issued \(role.rawValue) certificate \"\(issued.key.certificate.subject)\"")
                print("certificate: \(issued.certificate.path)")
                print("private key: \(issued.privateKey.path)")
                print("valid until \(issued.key.certificate.notValidAfter.formatted(.iso8601))")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the CA, the trust bundle and issued certificates.")
        @OptionGroup var directory: DirectoryOption

        func run() throws {
            try reportingErrors {
                let pki = directory.pki
                let authority = try pki.authority()
                let now = Date()
                print("CA:      \(authority.certificate.subject)")
                print(
                    "  cluster \(authority.clusterName), expires \(Self.date(authority.certificate.notValidAfter))"
                        + (authority.needsRenewal(now: now) ? " (renewal due: run `syncctl ca rotate`)" : ""))
                let bundle = try pki.bundle()
                print("BUNDLE:  \(bundle.certificates.count) certificate(s)")
                for certificate in bundle.certificates {
                    let origin = CertificateSubject(certificate).cluster == authority.clusterName ? "own" : "external"
                    print(
                        "  \(origin.padding(toLength: 9, withPad: " ", startingAt: 0))"
                            + "sha256:\(PEM.fingerprint(certificate).prefix(16))  expires \(Self.date(certificate.notValidAfter))"
                            + "  \(certificate.subject)")
                }
                let issued = try pki.issued()
                print("ISSUED:  \(issued.count) certificate(s)")
                let width = max(6, issued.map { CertificateSubject($0).name.count + 2 }.max() ?? 0)
                if !issued.isEmpty {
                    print(
                        "  ROLE         " + "NAME".padding(toLength: width, withPad: " ", startingAt: 0)
                            + "EXPIRES               STATE")
                }
                for certificate in issued {
                    let subject = CertificateSubject(certificate)
                    let state =
                        certificate.notValidAfter < now
                        ? "expired"
                        : (pki.policy.needsRenewal(certificate, now: now) ? "renew" : "valid")
                    print(
                        "  " + (subject.role?.rawValue ?? "-").padding(toLength: 13, withPad: " ", startingAt: 0)
                            + subject.name.padding(toLength: width, withPad: " ", startingAt: 0)
                            + Self.date(certificate.notValidAfter) + "  " + state)
                }
            }
        }

        static func date(_ date: Date) -> String { date.formatted(.iso8601) }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Print the trust bundle (kubevirt-ca ca-bundle) for another cluster to import: the cluster's, through its API, when --kubeconfig or --context is given, else the PKI directory's."
        )
        @OptionGroup var directory: DirectoryOption
        @Option(help: "The kubeconfig of the cluster to export from (through its API).") var kubeconfig: String?
        @Option(help: "Its context.") var context: String?

        func run() async throws {
            if kubeconfig != nil || context != nil {
                try await reportingFailures {
                    let map = try await ClusterOptions.connect(kubeconfig: kubeconfig, context: context).client.get(
                        Kinds.configMap, namespace: ConfigMap.caNamespace, name: ConfigMap.caBundleName)
                    guard let pem = map["data"]?[ConfigMap.caBundleKey]?.string, !pem.isEmpty else {
                        throw CLIError("the cluster's kubevirt-ca ConfigMap holds no ca-bundle")
                    }
                    print(pem, terminator: pem.hasSuffix("\n") ? "" : "\n")
                }
                return
            }
            try reportingErrors {
                print(try directory.pki.bundle().pem, terminator: "")
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Give another cluster's CA bundle to this cluster through its API (the kubevirt-external-ca inbox); prints what the controller did with each certificate."
        )
        @OptionGroup var cluster: ClusterOptions
        @Option(name: [.short, .customLong("filename")], help: "A PEM bundle file, or - for standard input.")
        var file: String
        @Option(help: "Seconds to wait for the controller to merge it.") var timeout = 30

        func run() async throws {
            try await reportingFailures {
                let text: String
                if file == "-" {
                    text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                } else {
                    guard let data = FileManager.default.contents(atPath: file) else {
                        throw CLIError("cannot read \(file)")
                    }
                    text = String(decoding: data, as: UTF8.self)
                }
                guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                    throw CLIError("the bundle to import is empty")
                }
                let client = try cluster.connect().client
                let before = try? await client.get(
                    Kinds.configMap, namespace: ConfigMap.caNamespace, name: ConfigMap.externalCABundleName)
                let patch: JSONValue = ["data": [.init(stringLiteral: ConfigMap.caBundleKey): .string(text)]]
                let written: JSONValue
                if before == nil {
                    written = try await client.create(
                        Kinds.configMap,
                        [
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": [
                                "name": .string(ConfigMap.externalCABundleName),
                                "namespace": .string(ConfigMap.caNamespace),
                            ],
                            "data": [.init(stringLiteral: ConfigMap.caBundleKey): .string(text)],
                        ])
                } else {
                    written = try await client.patch(
                        Kinds.configMap, namespace: ConfigMap.caNamespace, name: ConfigMap.externalCABundleName, patch)
                }
                let version = written["metadata"]?["resourceVersion"]?.string
                // The controller clears the inbox once it merged it and says how in an annotation.
                let deadline = Date().addingTimeInterval(Double(timeout))
                while Date() < deadline {
                    let inbox = try await client.get(
                        Kinds.configMap, namespace: ConfigMap.caNamespace, name: ConfigMap.externalCABundleName)
                    if inbox["metadata"]?["resourceVersion"]?.string != version,
                        inbox["data"]?[ConfigMap.caBundleKey]?.string?.isEmpty ?? true
                    {
                        let result = inbox["metadata"]?["annotations"]?[ConfigMap.mergeResultAnnotation]?.string ?? ""
                        print(result)
                        if result.hasPrefix("not merged") { throw CLIError("the controller did not merge the bundle") }
                        return
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                throw CLIError(
                    "the controller did not merge the bundle within \(timeout) s (is it running with --pki?)")
            }
        }
    }

    struct ImportExternal: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-external",
            abstract: "Merge another cluster's CA bundle (the kubevirt-external-ca inbox) into the trust bundle."
        )
        @OptionGroup var directory: DirectoryOption
        @Argument(help: "A PEM bundle file, or - for standard input.") var file: String

        func run() throws {
            try reportingErrors {
                let text: String
                if file == "-" {
                    text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                } else {
                    guard let data = FileManager.default.contents(atPath: file) else {
                        throw TransportError(.fileSystem, "cannot read \(file)")
                    }
                    text = String(decoding: data, as: UTF8.self)
                }
                let decisions = try directory.pki.importExternal(text)
                for decision in decisions {
                    print(decision)
                }
                let added = decisions.filter { $0.action == .added }.count
                let rejected = decisions.filter { $0.action == .rejected }.count
                print(
                    "merged: \(added) added, \(rejected) rejected; bundle holds "
                        + "\(try directory.pki.bundle().certificates.count) certificate(s); inbox cleared")
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Renew the CA once it passed 80% of its lifetime (or with --force); the old CA stays trusted."
        )
        @OptionGroup var directory: DirectoryOption
        @Flag(help: "Renew even if the CA is not due.") var force = false

        func run() throws {
            try reportingErrors {
                if let next = try directory.pki.rotate(force: force) {
                    print(
                        "renewed CA: \"\(next.certificate.subject)\", valid until \(next.certificate.notValidAfter.formatted(.iso8601))"
                    )
                    print("the previous CA stays in the bundle through the overlap; re-issue leaf certificates")
                } else {
                    print("CA is not due for renewal (use --force to renew anyway)")
                }
            }
        }
    }
}
