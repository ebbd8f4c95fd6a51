import Crypto
public import Foundation
import SwiftASN1
public import X509

/// A PKCS#10 certificate signing request, as a node agent sends it to renew its certificate through the controller:
/// the agent keeps the new private key, the controller (which holds the CA key) signs the public key.
public struct SigningRequest: Sendable {
    /// The request as PEM (`CERTIFICATE REQUEST`).
    public var pem: String
    /// The key the request is for; it never leaves the requester.
    public var privateKey: Certificate.PrivateKey

    /// A request with a new ECDSA P-256 key, for the subject a certificate of `request` would carry in `cluster`.
    public static func make(for request: LeafRequest, cluster: String) throws(TransportError) -> SigningRequest {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        do {
            let subject = try DistinguishedName {
                OrganizationName(cluster)
                OrganizationalUnitName(request.role.rawValue)
                CommonName(request.role.fixedCommonName ?? request.name)
            }
            let csr = try CertificateSigningRequest(
                version: .v1, subject: subject, privateKey: key, attributes: .init())
            return SigningRequest(pem: try csr.serializeAsPEM().pemString + "\n", privateKey: key)
        } catch {
            throw TransportError(.issuanceFailed, "making a signing request for \"\(request.name)\" failed: \(error)")
        }
    }

    /// The subject and public key of a PEM request whose signature verifies (the requester holds the key).
    public static func read(_ pem: String) throws(TransportError) -> (
        subject: CertificateSubject, publicKey: Certificate.PublicKey
    ) {
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(pemEncoded: pem)
        } catch {
            throw TransportError(.malformedInput, "the signing request is not a PEM CERTIFICATE REQUEST: \(error)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw TransportError(.malformedInput, "the signing request's signature does not verify with its own key")
        }
        return (CertificateSubject(subject: csr.subject), csr.publicKey)
    }
}

extension LeafRequest {
    /// What renewing `certificate` asks for: the same role, name and alternative names.
    public init(renewing certificate: Certificate) {
        let subject = CertificateSubject(certificate)
        var dnsNames: [String] = []
        var ipAddresses: [String] = []
        for name in (try? certificate.extensions.subjectAlternativeNames) ?? SubjectAlternativeNames([]) {
            switch name {
            case .dnsName(let text): dnsNames.append(text)
            case .ipAddress(let bytes):
                if let text = IPAddressText.text(Array(bytes.bytes)) { ipAddresses.append(text) }
            default: break
            }
        }
        self.init(role: subject.role ?? .user, name: subject.name, dnsNames: dnsNames, ipAddresses: ipAddresses)
    }
}
