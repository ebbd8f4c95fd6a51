public import Foundation
import NIOConcurrencyHelpers
public import TLSTransport
import X509

/// The cluster's trust bundle as the controller keeps it (KubeVirt's `kubevirt-ca`): read from the PKI directory (or
/// the `--ca` file when the controller holds no CA), merged from the external inbox, renewed with the CA, and
/// reloaded into every listener and client of the controller — the next handshake uses it, no restart.
public final class ClusterTrust: Sendable {
    let pki: PKIDirectory?
    let bundleFile: String
    private let providers = NIOLockedValueBox<[TLSContextProvider]>([])

    /// Trust kept in `pki` (nil: the bundle at `bundleFile` is only published, never changed).
    public init(pki: PKIDirectory?, bundleFile: String) {
        self.pki = pki
        self.bundleFile = bundleFile
    }

    /// Providers whose trust follows the bundle from now on.
    public func follow(_ provider: TLSContextProvider) {
        providers.withLockedValue { $0.append(provider) }
    }

    /// The bundle in force.
    public func bundle() throws(TransportError) -> TrustBundle {
        if let pki { return try pki.bundle() }
        do {
            return try TrustBundle(pem: try String(contentsOfFile: bundleFile, encoding: .utf8))
        } catch let error as TransportError {
            throw error
        } catch {
            throw TransportError(.fileSystem, "cannot read \(bundleFile): \(error)")
        }
    }

    /// Whether the controller can change the bundle (it holds the PKI directory).
    public var canMerge: Bool { pki != nil }

    /// Merges an inbox text by the bundle rules and reloads every provider; every entry's fate is returned.
    public func merge(_ inbox: String) throws(TransportError) -> [BundleDecision] {
        guard let pki else {
            throw TransportError(
                .invalidArgument, "this controller holds no CA directory (--pki), so it cannot change its trust bundle")
        }
        let decisions = try pki.importExternal(inbox)
        try reload()
        return decisions
    }

    /// Renews the CA once it passed its renewal point (the old CA stays through the overlap) and reloads; returns
    /// the new CA, or nil when none was due. The time until the next check is `nextCheck()`.
    public func rotateIfDue(now: Date = Date()) throws(TransportError) -> CertificateAuthority? {
        guard let pki, let next = try pki.rotate(now: now) else { return nil }
        try reload()
        return next
    }

    /// When the CA is due for renewal (nil without a CA directory).
    public func renewalDue() -> Date? {
        guard let pki, let authority = try? pki.authority() else { return nil }
        let certificate = authority.certificate
        let lifetime = certificate.notValidAfter.timeIntervalSince(certificate.notValidBefore)
        return certificate.notValidBefore.addingTimeInterval(lifetime * authority.policy.renewalFraction)
    }

    /// The bundle into every provider that follows it.
    public func reload() throws(TransportError) {
        let bundle = try bundle()
        for provider in providers.withLockedValue({ $0 }) {
            try provider.reload(trust: bundle)
        }
    }
}
