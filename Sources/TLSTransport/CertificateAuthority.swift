import Crypto
public import Foundation
import SwiftASN1
public import X509

/// Lifetimes and renewal points of the cluster PKI.
public struct PKIPolicy: Sendable, Hashable {
    /// How long a cluster CA is valid. KubeVirt uses 48 h; vmsync defaults to 7 days.
    public var caValidity: Duration
    /// How long a leaf certificate is valid.
    public var leafValidity: Duration
    /// The fraction of a certificate's lifetime after which it is renewed.
    public var renewalFraction: Double
    /// How far before "now" a new certificate's validity starts, to tolerate clock skew between hosts.
    public var backdating: Duration

    /// 7-day CAs, 24-hour leaves, renewed at 80% of their lifetime, backdated 5 minutes.
    public static let `default` = PKIPolicy(
        caValidity: .seconds(7 * 24 * 3600),
        leafValidity: .seconds(24 * 3600),
        renewalFraction: 0.8,
        backdating: .seconds(300)
    )

    /// Creates a policy.
    public init(
        caValidity: Duration, leafValidity: Duration, renewalFraction: Double, backdating: Duration = .seconds(300)
    ) {
        self.caValidity = caValidity
        self.leafValidity = leafValidity
        self.renewalFraction = renewalFraction
        self.backdating = backdating
    }

    /// The default policy with leaves of `seconds` (the controller's `--leaf-validity`), backdated a quarter of that
    /// at most 5 minutes, so a short leaf still renews well before it expires.
    public static func leaves(validFor seconds: Int) -> PKIPolicy {
        PKIPolicy(
            caValidity: Self.default.caValidity, leafValidity: .seconds(seconds),
            renewalFraction: Self.default.renewalFraction,
            backdating: .seconds(min(300, seconds / 4)))
    }

    /// How long a superseded CA stays in the bundle after its successor appears: the rest of its life.
    public var caOverlap: Duration {
        .milliseconds(Int64((caValidity.timeInterval * (1 - renewalFraction) * 1000).rounded()))
    }

    /// Whether `certificate` has passed the renewal point at `now`.
    public func needsRenewal(_ certificate: Certificate, now: Date = Date()) -> Bool {
        let lifetime = certificate.notValidAfter.timeIntervalSince(certificate.notValidBefore)
        let renewAt = certificate.notValidBefore.addingTimeInterval(lifetime * renewalFraction)
        return now >= renewAt
    }
}

extension Duration {
    /// The duration as seconds in floating point.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}

/// What a leaf certificate is for: the role, the holder's name and the addresses it serves.
public struct LeafRequest: Sendable, Hashable {
    /// The role written into the certificate.
    public var role: PeerRole
    /// The holder's name (CN). Ignored for the sync roles, whose CN is fixed by KubeVirt.
    public var name: String
    /// DNS names for the subject alternative names (servers).
    public var dnsNames: [String]
    /// IP addresses for the subject alternative names (servers), as text.
    public var ipAddresses: [String]

    /// Describes a leaf to issue.
    public init(role: PeerRole, name: String, dnsNames: [String] = [], ipAddresses: [String] = []) {
        self.role = role
        self.name = name
        self.dnsNames = dnsNames
        self.ipAddresses = ipAddresses
    }
}

/// A cluster's certificate authority: an ECDSA P-256 self-signed CA that issues role certificates.
public struct CertificateAuthority: Sendable, Hashable {
    /// The CA certificate and its key.
    public var certifiedKey: CertifiedKey
    /// The lifetimes this CA issues with.
    public var policy: PKIPolicy

    /// The CA certificate.
    public var certificate: Certificate { certifiedKey.certificate }

    /// The cluster this CA belongs to (its subject's `O`).
    public var clusterName: String { CertificateSubject(certificate).cluster ?? "" }

    /// Wraps an existing CA certificate and key.
    public init(certifiedKey: CertifiedKey, policy: PKIPolicy = .default) throws(TransportError) {
        let constraints = try? certifiedKey.certificate.extensions.basicConstraints
        guard case .isCertificateAuthority = constraints else {
            throw TransportError(
                .invalidArgument,
                "certificate \"\(certifiedKey.certificate.subject)\" is not a CA (basicConstraints CA:TRUE missing)"
            )
        }
        self.certifiedKey = certifiedKey
        self.policy = policy
    }

    /// Creates a new CA for `cluster`, valid from `now` for the policy's CA lifetime.
    public static func create(
        cluster: String,
        policy: PKIPolicy = .default,
        now: Date = Date()
    ) throws(TransportError) -> CertificateAuthority {
        guard Self.isValidName(cluster) else {
            throw TransportError(
                .invalidArgument, "cluster name \"\(cluster)\" must be 1-63 characters of a-z, 0-9, '-' and '.'")
        }
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        do {
            let name = try DistinguishedName {
                OrganizationName(cluster)
                CommonName("vmsync-ca@\(cluster)@\(Int(now.timeIntervalSince1970))")
            }
            let certificate = try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: key.publicKey,
                notValidBefore: Self.wholeSecond(now.addingTimeInterval(-policy.backdating.timeInterval)),
                notValidAfter: Self.wholeSecond(now.addingTimeInterval(policy.caValidity.timeInterval)),
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(hash: key.publicKey)
                },
                issuerPrivateKey: key
            )
            return try CertificateAuthority(
                certifiedKey: CertifiedKey(chain: [certificate], privateKey: key), policy: policy)
        } catch let error as TransportError {
            throw error
        } catch {
            throw TransportError(.issuanceFailed, "creating the CA of cluster \"\(cluster)\" failed: \(error)")
        }
    }

    /// `date` down to its whole second: X.509 times hold whole seconds and encoding rounds to the nearest, so a time
    /// left fractional could make a certificate valid up to half a second longer (or earlier) than asked.
    static func wholeSecond(_ date: Date) -> Date {
        Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
    }

    /// Issues a leaf certificate for `request` with a new key, valid from `now` for the policy's leaf lifetime
    /// (never beyond the CA's own expiry).
    public func issue(_ request: LeafRequest, now: Date = Date()) throws(TransportError) -> CertifiedKey {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        return try CertifiedKey(chain: [try sign(request, publicKey: key.publicKey, now: now)], privateKey: key)
    }

    /// Signs a leaf certificate for `request` and a key its holder keeps (a certificate signing request's), valid
    /// from `now` for the policy's leaf lifetime (never beyond the CA's own expiry).
    public func sign(_ request: LeafRequest, publicKey: Certificate.PublicKey, now: Date = Date())
        throws(TransportError) -> Certificate
    {
        let commonName = request.role.fixedCommonName ?? request.name
        guard request.role.fixedCommonName != nil || Self.isValidName(request.name) else {
            throw TransportError(
                .invalidArgument,
                "certificate name \"\(request.name)\" must be 1-63 characters of a-z, 0-9, '-' and '.'"
            )
        }
        var addresses: [GeneralName] = request.dnsNames.map { .dnsName($0) }
        for text in request.ipAddresses {
            guard let bytes = IPAddressText.bytes(text) else {
                throw TransportError(.invalidArgument, "\"\(text)\" is not an IPv4 or IPv6 address")
            }
            addresses.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        var usages: [ExtendedKeyUsage.Usage] = []
        if request.role.servesTLS { usages.append(.serverAuth) }
        if request.role.actsAsTLSClient { usages.append(.clientAuth) }

        let notAfter = min(
            Self.wholeSecond(now.addingTimeInterval(policy.leafValidity.timeInterval)), certificate.notValidAfter)
        do {
            let subject = try DistinguishedName {
                OrganizationName(clusterName)
                OrganizationalUnitName(request.role.rawValue)
                CommonName(commonName)
            }
            let sanList = addresses
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage(usages)
                SubjectKeyIdentifier(hash: publicKey)
                if let authorityKey = try? certificate.extensions.subjectKeyIdentifier {
                    AuthorityKeyIdentifier(keyIdentifier: authorityKey.keyIdentifier)
                }
                if !sanList.isEmpty {
                    SubjectAlternativeNames(sanList)
                }
            }
            return try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: publicKey,
                notValidBefore: Self.wholeSecond(now.addingTimeInterval(-policy.backdating.timeInterval)),
                notValidAfter: notAfter,
                issuer: certificate.subject,
                subject: subject,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: extensions,
                issuerPrivateKey: certifiedKey.privateKey
            )
        } catch {
            throw TransportError(
                .issuanceFailed,
                "issuing a \(request.role.rawValue) certificate for \"\(commonName)\" failed: \(error)"
            )
        }
    }

    /// Whether this CA has passed its renewal point.
    public func needsRenewal(now: Date = Date()) -> Bool {
        policy.needsRenewal(certificate, now: now)
    }

    /// A successor CA for the same cluster. The caller keeps the old CA in the trust bundle through the overlap.
    public func renewed(now: Date = Date()) throws(TransportError) -> CertificateAuthority {
        try Self.create(cluster: clusterName, policy: policy, now: now)
    }

    static func isValidName(_ name: String) -> Bool {
        guard (1...63).contains(name.count) else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == ".") }
            && name.first != "-" && name.first != "."
    }
}
