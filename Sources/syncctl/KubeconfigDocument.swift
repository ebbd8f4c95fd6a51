import ClusterAPI
import Foundation

/// A kubeconfig file (the format kubectl reads): clusters with a server and CA, users with client certificates,
/// contexts joining them.
///
/// This part only reads text (it is fuzzed, see `Fuzz/`); `Kubeconfig.target(context:)` turns what it finds into a
/// TLS client.
struct Kubeconfig {
    var document: JSONValue

    /// `--kubeconfig`, else `$VMSYNC_CONFIG`, else `$XDG_CONFIG_HOME/vmsync/config` (or `~/.config/vmsync/config`).
    static func path(_ explicit: String?) -> String {
        if let explicit { return explicit }
        if let environment = ProcessInfo.processInfo.environment["VMSYNC_CONFIG"], !environment.isEmpty {
            return environment
        }
        let base =
            ProcessInfo.processInfo.environment["XDG_CONFIG_HOME"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".config")
        return base.appendingPathComponent("vmsync/config").path
    }

    /// Reads the kubeconfig at `path`.
    static func load(_ path: String) throws(CLIError) -> Kubeconfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CLIError(
                "cannot read the kubeconfig \(path) (set --kubeconfig or VMSYNC_CONFIG, or create one with `syncctl config create`)"
            )
        }
        return try parse(text, source: path)
    }

    /// Parses kubeconfig text.
    static func parse(_ text: String, source: String) throws(CLIError) -> Kubeconfig {
        do {
            return Kubeconfig(document: try YAML.document(text))
        } catch {
            throw CLIError("the kubeconfig \(source) is not valid: \(error.message)")
        }
    }

    /// What a context names, as text.
    struct Credentials: Equatable {
        var cluster: String
        var server: String
        var caPEM: String
        var user: String
        var certificatePEM: String
        var keyPEM: String
        var namespace: String
    }

    /// The server, CA and user credentials of `wanted` (or the current context).
    func credentials(context wanted: String?) throws(CLIError) -> Credentials {
        guard let name = wanted ?? document["current-context"]?.string else {
            throw CLIError("the kubeconfig has no current-context; pass --context")
        }
        guard let context = named("contexts", name)?["context"] else {
            throw CLIError("context \"\(name)\" is not in the kubeconfig")
        }
        guard let clusterName = context["cluster"]?.string, let cluster = named("clusters", clusterName)?["cluster"]
        else {
            throw CLIError("context \"\(name)\" names no cluster the kubeconfig has")
        }
        guard let userName = context["user"]?.string, let user = named("users", userName)?["user"] else {
            throw CLIError("context \"\(name)\" names no user the kubeconfig has")
        }
        guard let server = cluster["server"]?.string else {
            throw CLIError("cluster \"\(clusterName)\" has no https:// (or unix://) server")
        }
        return Credentials(
            cluster: clusterName,
            server: server,
            caPEM: try pem(
                cluster, data: "certificate-authority-data", file: "certificate-authority",
                what: "cluster \(clusterName)'s CA"),
            user: userName,
            certificatePEM: try pem(
                user, data: "client-certificate-data", file: "client-certificate",
                what: "user \(userName)'s certificate"),
            keyPEM: try pem(user, data: "client-key-data", file: "client-key", what: "user \(userName)'s key"),
            namespace: context["namespace"]?.string ?? "default"
        )
    }

    private func named(_ list: String, _ name: String) -> JSONValue? {
        document[list]?.array?.first { $0["name"]?.string == name }
    }

    private func pem(_ section: JSONValue, data: String, file: String, what: String) throws(CLIError) -> String {
        if let encoded = section[data]?.string {
            guard let decoded = Data(base64Encoded: encoded) else { throw CLIError("\(what) (\(data)) is not base64") }
            return String(decoding: decoded, as: UTF8.self)
        }
        if let path = section[file]?.string {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw CLIError("cannot read \(what) from \(path)")
            }
            return text
        }
        throw CLIError("\(what) is missing (\(data) or \(file))")
    }

    /// A kubeconfig with one cluster, one user and one context, certificates embedded.
    static func make(
        cluster: String, server: String, caPEM: String, user: String, certificatePEM: String, keyPEM: String,
        namespace: String
    ) -> JSONValue {
        func b64(_ text: String) -> JSONValue { .string(Data(text.utf8).base64EncodedString()) }
        return [
            "apiVersion": "v1", "kind": "Config", "current-context": .string(cluster),
            "clusters": [
                [
                    "name": .string(cluster),
                    "cluster": ["server": .string(server), "certificate-authority-data": b64(caPEM)],
                ]
            ],
            "users": [
                [
                    "name": .string(user),
                    "user": ["client-certificate-data": b64(certificatePEM), "client-key-data": b64(keyPEM)],
                ]
            ],
            "contexts": [
                [
                    "name": .string(cluster),
                    "context": ["cluster": .string(cluster), "user": .string(user), "namespace": .string(namespace)],
                ]
            ],
        ]
    }
}

/// A CLI failure: printed as one line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
