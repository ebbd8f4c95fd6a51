import ClusterAPI
public import ClusterClient
import Foundation
public import TLSTransport

/// A node agent renews its certificate through the controller: it makes a new key, sends a signing request for its own
/// identity as a `CertificateSigningRequest`, and takes the certificate the controller signed with the cluster CA.
/// The key never leaves the node, and the node never holds the CA key.
public enum CertificateRenewal {
    /// The signer a node's request names (the controller's `CertificateSigner.nodeSignerName`).
    public static let signerName = "vmsync.io/node"

    /// Asks the controller for a certificate for `request`; with `certificatePath` and `keyPath` the result also
    /// replaces the files the agent was started with.
    public static func renew(
        through client: APIClient, _ request: LeafRequest, cluster: String, certificatePath: String? = nil,
        keyPath: String? = nil
    ) async throws -> CertifiedKey {
        let signing = try SigningRequest.make(for: request, cluster: cluster)
        var metadata = ObjectMeta()
        metadata.generateName = "node-\(request.name)-"
        let object = CertificateSigningRequest(
            metadata: metadata,
            spec: .init(
                request: Data(signing.pem.utf8).base64EncodedString(), signerName: signerName,
                usages: ["digital signature", "client auth", "server auth"]))
        let created = try await client.create(object)
        guard let encoded = created.status?.certificate, let data = Data(base64Encoded: encoded) else {
            throw APIError.internalError("the controller answered the signing request without a certificate")
        }
        let chain = try PEM.certificates(from: String(decoding: data, as: UTF8.self), source: "the signed certificate")
        let renewed = try CertifiedKey(chain: chain, privateKey: signing.privateKey)
        if let certificatePath, let keyPath { try renewed.write(certificateTo: certificatePath, keyTo: keyPath) }
        return renewed
    }
}
