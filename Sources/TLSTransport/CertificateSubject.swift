public import X509

/// What a cluster certificate says about its holder: cluster, role and name.
public struct CertificateSubject: Sendable, Hashable, CustomStringConvertible {
    /// The cluster that issued it (the subject's `O`).
    public var cluster: String?
    /// The role (from `OU`, or from KubeVirt's fixed common names for the sync identities).
    public var role: PeerRole?
    /// The holder's name (the subject's `CN`).
    public var name: String

    /// Reads cluster, role and name from a certificate's subject.
    public init(_ certificate: Certificate) {
        self.init(subject: certificate.subject)
    }

    /// Reads cluster, role and name from a distinguished name.
    public init(subject distinguishedName: DistinguishedName) {
        var cluster: String?
        var unit: String?
        var commonName = ""
        for rdn in distinguishedName {
            for attribute in rdn {
                let value = String(attribute.value) ?? attribute.value.description
                switch attribute.type {
                case .RDNAttributeType.organizationName: cluster = value
                case .RDNAttributeType.organizationalUnitName: unit = value
                case .RDNAttributeType.commonName: commonName = value
                default: break
                }
            }
        }
        self.cluster = cluster
        self.name = commonName
        if commonName == PeerRole.syncClientCommonName {
            self.role = .syncClient
        } else if commonName == PeerRole.syncServerCommonName {
            self.role = .syncServer
        } else {
            self.role = unit.flatMap { PeerRole(rawValue: $0) }
        }
    }

    public var description: String {
        "\(role?.rawValue ?? "no-role") \"\(name)\" of cluster \"\(cluster ?? "?")\""
    }
}
