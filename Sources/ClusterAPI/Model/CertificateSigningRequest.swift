/// Kubernetes' CertificateSigningRequest (`certificates.k8s.io/v1`): a node agent's request for a certificate of its
/// own identity, which the controller (holding the CA key) signs at create.
public struct CertificateSigningRequest: Resource {
    public static let kind = Kinds.certificateSigningRequest

    public var apiVersion: String? = "certificates.k8s.io/v1"
    public var kind: String? = "CertificateSigningRequest"
    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: Status?

    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }

    public struct Spec: Codable, Sendable, Hashable {
        /// The PEM signing request, base64-encoded.
        public var request: String
        public var signerName: String
        public var usages: [String]?
        public var expirationSeconds: Int64?
        public var username: String?

        public init(request: String, signerName: String, usages: [String]? = nil) {
            self.request = request
            self.signerName = signerName
            self.usages = usages
        }
    }

    public struct Status: Codable, Sendable, Hashable {
        /// The signed certificate chain (PEM), base64-encoded.
        public var certificate: String?
        public var conditions: [Condition]?
    }
}
