import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport

extension Kubeconfig {
    /// What a context resolves to.
    struct Target {
        var endpoint: Endpoint
        var provider: TLSContextProvider
        var namespace: String
    }

    /// The endpoint and TLS client of `wanted` (or the current context).
    func target(context wanted: String?) throws(CLIError) -> Target {
        let credentials = try credentials(context: wanted)
        guard let endpoint = try? APIClient.endpoint(server: credentials.server) else {
            throw CLIError("cluster \"\(credentials.cluster)\" has no https:// (or unix://) server")
        }
        do {
            let identity = try CertifiedKey(
                certificatePEM: credentials.certificatePEM, privateKeyPEM: credentials.keyPEM)
            let provider = try TLSContextProvider(identity: identity, trust: TrustBundle(pem: credentials.caPEM))
            return Target(endpoint: endpoint, provider: provider, namespace: credentials.namespace)
        } catch {
            throw CLIError("the kubeconfig's credentials are not usable: \(error.message)")
        }
    }
}
