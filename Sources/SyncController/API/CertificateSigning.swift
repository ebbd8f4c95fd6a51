import ClusterAPI
import Foundation
public import TLSTransport
import X509

/// Signs node agents' certificate renewals with the cluster CA, which only the controller's host holds: the agents
/// never see the CA key. The CA is read from the PKI directory at every signing, so a `ca rotate` applies at once.
public struct CertificateSigner: Sendable {
    /// The signer name a node's renewal names (Kubernetes' `spec.signerName`).
    public static let nodeSignerName = "vmsync.io/node"
    /// The label that ties a request to the node that made it.
    static let nodeLabel = "vmsync.io/node"

    /// The PKI directory with the CA and its key; its policy sets the lifetime of what is signed.
    public var pki: PKIDirectory

    public init(pki: PKIDirectory) {
        self.pki = pki
    }

    /// The certificate for a node's request: the requester's own identity (role, name, alternative names of the
    /// certificate it connected with) and the request's key. A request for another name or role is refused.
    func sign(_ object: JSONValue, by peer: PeerIdentity) throws(APIError) -> String {
        guard peer.role == .node else {
            throw APIError.forbidden(
                "certificatesigningrequests is forbidden: only node agents renew through the cluster API; \(peer) gets certificates from `syncctl ca issue`"
            )
        }
        guard let signer = object["spec"]?["signerName"]?.string, signer == Self.nodeSignerName else {
            throw APIError(
                .invalid, code: 422,
                "CertificateSigningRequest.certificates.k8s.io is invalid: spec.signerName: Unsupported value: \(object["spec"]?["signerName"]?.jsonString() ?? "null"): supported values: \"\(Self.nodeSignerName)\"",
                details: .init(
                    group: "certificates.k8s.io", kind: "CertificateSigningRequest",
                    causes: [
                        FieldError(
                            field: "spec.signerName", reason: .notSupported,
                            message: "supported values: \"\(Self.nodeSignerName)\"")
                    ]))
        }
        guard let encoded = object["spec"]?["request"]?.string, let data = Data(base64Encoded: encoded) else {
            throw APIError(
                .invalid, code: 422,
                "CertificateSigningRequest.certificates.k8s.io is invalid: spec.request: Invalid value: not base64",
                details: .init(
                    group: "certificates.k8s.io", kind: "CertificateSigningRequest",
                    causes: [FieldError(field: "spec.request", reason: .invalid, message: "not base64")]))
        }
        let read: (subject: CertificateSubject, publicKey: Certificate.PublicKey)
        do {
            read = try SigningRequest.read(String(decoding: data, as: UTF8.self))
        } catch {
            throw APIError(
                .invalid, code: 422,
                "CertificateSigningRequest.certificates.k8s.io is invalid: spec.request: Invalid value: \(error.message)",
                details: .init(
                    group: "certificates.k8s.io", kind: "CertificateSigningRequest",
                    causes: [FieldError(field: "spec.request", reason: .invalid, message: error.message)]))
        }
        guard read.subject.name == peer.name, read.subject.role == .node, read.subject.cluster == peer.cluster else {
            throw APIError.forbidden(
                "certificatesigningrequests is forbidden: node \"\(peer.name)\" may request a certificate only for itself, not for \(read.subject)"
            )
        }
        do {
            let certificate = try pki.authority().sign(
                LeafRequest(renewing: peer.certificate), publicKey: read.publicKey)
            return try PEM.encode([certificate])
        } catch {
            throw APIError.internalError("signing the certificate of node \"\(peer.name)\" failed: \(error.message)")
        }
    }
}
