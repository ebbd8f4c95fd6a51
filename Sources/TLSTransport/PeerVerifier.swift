public import Foundation
import SwiftASN1
@_spi(FixedExpiryValidationTime) public import X509

/// Verifies a peer's certificate chain against a trust bundle and a peer policy, with a precise reason on failure.
public struct PeerVerifier: Sendable {
    /// Which side of the handshake the verified peer is on.
    public enum PeerSide: Sendable, Hashable {
        /// The peer is a TLS client (we are the server): it needs the clientAuth usage.
        case client
        /// The peer is a TLS server (we are the client): it needs the serverAuth usage.
        case server
    }

    /// The CAs to chain to.
    public var trust: TrustBundle
    /// Who is allowed.
    public var policy: PeerPolicy
    /// The peer's side.
    public var side: PeerSide
    /// This cluster's name (the `O` of its CAs). CAs of other clusters in the bundle — imported with
    /// `import-external` — are trusted only for the sync roles; nil trusts no CA for more than that.
    public var homeCluster: String?

    /// The roles a CA imported from another cluster may vouch for.
    public static let importedRoles: Set<PeerRole> = [.syncClient, .syncServer]

    /// Creates a verifier.
    public init(trust: TrustBundle, policy: PeerPolicy, side: PeerSide, homeCluster: String?) {
        self.trust = trust
        self.policy = policy
        self.side = side
        self.homeCluster = homeCluster
    }

    /// Verifies `chain` (leaf first, as presented) at `now`.
    public func verify(chain: [Certificate], now: Date = Date()) async -> Result<PeerIdentity, TransportError> {
        guard let leaf = chain.first else {
            return .failure(TransportError(.noPeerCertificate, "the \(side) presented no certificate"))
        }
        let subject = CertificateSubject(leaf)
        if leaf.notValidAfter < now {
            return .failure(
                TransportError(
                    .certificateExpired,
                    "certificate of \(subject) expired at \(TrustBundle.format(leaf.notValidAfter))"
                )
            )
        }
        if leaf.notValidBefore > now {
            return .failure(
                TransportError(
                    .certificateNotYetValid,
                    "certificate of \(subject) is not valid before \(TrustBundle.format(leaf.notValidBefore))"
                )
            )
        }
        var verifier = Verifier(rootCertificates: CertificateStore(trust.certificates)) {
            RFC5280Policy(fixedExpiryValidationTime: now)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
        guard case .validCertificate(let validated) = result, let anchor = validated.last else {
            return .failure(untrusted(leaf: leaf, subject: subject, now: now, result: result))
        }
        // The CA that vouches for the peer decides what it may be: its cluster is the peer's cluster, and a CA of
        // another cluster vouches only for sync identities.
        let issuingCluster = CertificateSubject(anchor).cluster
        if subject.cluster != issuingCluster {
            return .failure(
                TransportError(
                    .untrustedCertificate,
                    "certificate of \(subject) claims cluster \"\(subject.cluster ?? "")\" but chains to the CA of cluster \"\(issuingCluster ?? "")\""
                )
            )
        }
        guard let role = subject.role else {
            return .failure(TransportError(.roleNotAllowed, "certificate of \(subject) carries no vmsync role"))
        }
        let imported = homeCluster == nil || issuingCluster != homeCluster
        if let cluster = policy.cluster, issuingCluster != cluster {
            return .failure(
                TransportError(
                    .roleNotAllowed,
                    "\(subject) belongs to cluster \"\(issuingCluster ?? "")\"; only peers of cluster \"\(cluster)\" are accepted here"
                )
            )
        }
        // An imported CA vouches for more than synchronization only where the policy names its cluster (the tunnels
        // of a migration paired with it).
        if imported, !Self.importedRoles.contains(role), !policy.importedRoles.contains(role),
            policy.cluster == nil || policy.cluster != issuingCluster
        {
            return .failure(
                TransportError(
                    .roleNotAllowed,
                    "role \(role.rawValue) of \(subject) is refused: the CA of cluster \"\(issuingCluster ?? "")\" is imported "
                        + "and trusted only for synchronization (sync-client, sync-server) and that cluster's migrations"
                )
            )
        }
        guard policy.allowedRoles.contains(role) else {
            let allowed = policy.allowedRoles.map(\.rawValue).sorted().joined(separator: ", ")
            return .failure(
                TransportError(
                    .roleNotAllowed, "role \(role.rawValue) of \(subject) is not allowed here (allowed: \(allowed))")
            )
        }
        if let names = policy.allowedNames, !names.contains(subject.name) {
            return .failure(TransportError(.roleNotAllowed, "\(subject) is not among the peers this endpoint accepts"))
        }
        if let usages = try? leaf.extensions.extendedKeyUsage {
            let needed: ExtendedKeyUsage.Usage = side == .client ? .clientAuth : .serverAuth
            if !usages.contains(needed) {
                let usage = side == .client ? "clientAuth" : "serverAuth"
                return .failure(
                    TransportError(.wrongKeyUsage, "certificate of \(subject) lacks the \(usage) extended key usage")
                )
            }
        }
        return .success(PeerIdentity(certificate: leaf, imported: imported, validatedChain: Array(validated)))
    }

    private func untrusted(
        leaf: Certificate,
        subject: CertificateSubject,
        now: Date,
        result: CertificateValidationResult
    ) -> TransportError {
        let issuers = trust.certificates.filter { $0.subject == leaf.issuer }
        if issuers.isEmpty {
            return TransportError(
                .untrustedCertificate,
                "certificate of \(subject) was issued by \"\(leaf.issuer)\", which is not in the trust bundle"
            )
        }
        if issuers.allSatisfy({ $0.notValidAfter < now }) {
            return TransportError(
                .certificateExpired,
                "the CA \"\(leaf.issuer)\" that issued the certificate of \(subject) has expired"
            )
        }
        var reasons: [String] = []
        if case .couldNotValidate(let failures) = result {
            reasons = failures.map { $0.policyFailureReason.description }
        }
        let detail =
            reasons.isEmpty ? "its signature does not verify against the trusted CA" : reasons.joined(separator: "; ")
        return TransportError(
            .untrustedCertificate, "certificate of \(subject) does not chain to the trust bundle: \(detail)")
    }
}
