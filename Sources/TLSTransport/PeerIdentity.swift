public import X509

/// The verified identity of the other end of a mutual-TLS connection.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The peer's leaf certificate.
    public var certificate: Certificate
    /// Cluster, role and name read from the leaf.
    public var subject: CertificateSubject
    /// SHA-256 of the leaf's DER, hex.
    public var fingerprint: String

    /// The peer's role (always set: a peer without a role is refused during the handshake).
    public var role: PeerRole { subject.role ?? .user }
    /// The peer's name (CN).
    public var name: String { subject.name }
    /// The cluster that issued the peer's certificate.
    public var cluster: String? { subject.cluster }
    /// Whether the certificate chains to a CA imported from another cluster (trusted only for the sync roles).
    public var imported: Bool
    /// The chain the verification built, leaf first and the trusted CA last (just the leaf where no verification built
    /// one, as in tests).
    public var validatedChain: [Certificate]

    init(certificate: Certificate, imported: Bool = false, validatedChain: [Certificate]? = nil) {
        self.certificate = certificate
        self.validatedChain = validatedChain ?? [certificate]
        self.subject = CertificateSubject(certificate)
        self.fingerprint = PEM.fingerprint(certificate)
        self.imported = imported
    }

    public var description: String { subject.description }
}

/// Who may connect to an endpoint, or whom a client accepts as its server.
public struct PeerPolicy: Sendable, Hashable {
    /// Roles accepted on the other side.
    public var allowedRoles: Set<PeerRole>
    /// If set, the peer's name (CN) must be one of these.
    public var allowedNames: Set<String>?
    /// If set, the peer must belong to this cluster (its certificate chains to that cluster's CA). Naming a cluster
    /// whose CA was imported is what lets that CA vouch for more than the sync roles — here, and only here: the
    /// agents' tunnels of a migration paired with that cluster.
    public var cluster: String?
    /// Roles an imported CA may vouch for at this endpoint's handshake (beyond the sync roles), when what the peer may
    /// then do is decided per request by a policy naming its cluster — a tunnel exit's channels.
    public var importedRoles: Set<PeerRole>

    /// Accepts peers with any of `roles`, optionally only with one of `names` and only of `cluster`.
    public init(
        allowedRoles: Set<PeerRole>, allowedNames: Set<String>? = nil, cluster: String? = nil,
        importedRoles: Set<PeerRole> = []
    ) {
        self.allowedRoles = allowedRoles
        self.allowedNames = allowedNames
        self.cluster = cluster
        self.importedRoles = importedRoles
    }

    /// Whether `peer` (already verified at the handshake) is allowed by this policy: its role, its name, and its
    /// cluster — a peer vouched for by an imported CA only where the policy names that cluster.
    public func admits(_ peer: PeerIdentity) -> Bool {
        guard allowedRoles.contains(peer.role), allowedNames.map({ $0.contains(peer.name) }) ?? true else {
            return false
        }
        if let cluster { return peer.cluster == cluster }
        return !peer.imported || PeerVerifier.importedRoles.contains(peer.role)
    }

    /// Any role at all (still a verified certificate of a trusted CA).
    public static let anyRole = PeerPolicy(allowedRoles: Set(PeerRole.allCases))
}
