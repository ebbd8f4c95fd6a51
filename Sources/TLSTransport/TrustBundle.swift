public import Foundation
import SwiftASN1
public import X509

/// One decision taken while merging or pruning a trust bundle: which certificate, what happened, and why.
public struct BundleDecision: Sendable, Hashable, CustomStringConvertible {
    /// What happened to an entry.
    public enum Action: String, Sendable, Hashable {
        /// A certificate from the external inbox was added.
        case added
        /// A certificate already in the bundle stays.
        case kept
        /// The certificate is already present (same SHA-256 of DER).
        case droppedDuplicate = "dropped-duplicate"
        /// The certificate's notAfter has passed.
        case droppedExpired = "dropped-expired"
        /// The certificate's notBefore is in the future.
        case droppedNotYetValid = "dropped-not-yet-valid"
        /// A newer CA of the same cluster has existed longer than the overlap window.
        case droppedSuperseded = "dropped-superseded"
        /// The bundle holds more than its cap; the oldest go.
        case droppedOverCap = "dropped-over-cap"
        /// The entry is not a usable CA certificate (garbage, another PEM type, a leaf).
        case rejected
    }

    /// What happened.
    public var action: Action
    /// The certificate's subject, when the entry was a parsable certificate.
    public var subject: String?
    /// The SHA-256 fingerprint of the certificate's DER, when parsable.
    public var fingerprint: String?
    /// Why, in words.
    public var reason: String

    public var description: String {
        let who = subject.map { "\"\($0)\"" } ?? "entry"
        let print = fingerprint.map { " sha256:\($0.prefix(16))" } ?? ""
        return "\(action.rawValue): \(who)\(print): \(reason)"
    }
}

/// The set of CA certificates a cluster trusts, with KubeVirt's `kubevirt-ca` semantics.
///
/// Certificates are kept newest first (by notBefore). A merge from the external inbox drops duplicates
/// (SHA-256 of DER), expired and not-yet-valid certificates and rejects anything that is not a CA certificate;
/// pruning drops expired certificates, a cluster's superseded CA once its successor has existed longer than the
/// overlap window, and everything beyond the cap.
public struct TrustBundle: Sendable, Hashable {
    /// KubeVirt's cap on the number of certificates in a CA bundle.
    public static let defaultCap = 50

    /// The trusted CA certificates, newest first.
    public private(set) var certificates: [Certificate]

    /// A bundle of the given certificates, de-duplicated and ordered newest first.
    public init(_ certificates: [Certificate] = []) {
        var seen = Set<String>()
        self.certificates = certificates.filter { seen.insert(PEM.fingerprint($0)).inserted }
        sortNewestFirst()
    }

    /// Parses a PEM bundle strictly: every entry must be a parsable certificate.
    public init(pem: String) throws(TransportError) {
        let trimmed = pem.trimmingCharacters(in: .whitespacesAndNewlines)
        self.init(trimmed.isEmpty ? [] : try PEM.certificates(from: pem, source: "trust bundle"))
    }

    /// The bundle as concatenated PEM, newest first.
    public var pem: String {
        get throws(TransportError) { try PEM.encode(certificates) }
    }

    /// Whether a certificate with the same DER is in the bundle.
    public func contains(_ certificate: Certificate) -> Bool {
        let print = PEM.fingerprint(certificate)
        return certificates.contains { PEM.fingerprint($0) == print }
    }

    /// Adds certificates (for example the cluster's own new CA) without the inbox checks.
    public mutating func insert(_ certificate: Certificate) {
        guard !contains(certificate) else { return }
        certificates.append(certificate)
        sortNewestFirst()
    }

    /// Merges the text of the external inbox (`kubevirt-external-ca`) into the bundle and prunes it.
    ///
    /// Never throws: every entry of the inbox ends in exactly one decision, and garbage is `rejected` with a reason.
    @discardableResult
    public mutating func mergeExternal(
        _ inbox: String,
        currentCA: Certificate? = nil,
        overlap: Duration = PKIPolicy.default.caOverlap,
        cap: Int = TrustBundle.defaultCap,
        now: Date = Date()
    ) -> [BundleDecision] {
        var decisions: [BundleDecision] = []
        var known = Set(certificates.map(PEM.fingerprint))
        let home = currentCA.flatMap { CertificateSubject($0).cluster }
        for entry in PEMScanner.entries(in: inbox) {
            let certificate: Certificate
            switch entry {
            case .garbage(let snippet):
                decisions.append(.init(action: .rejected, reason: "not PEM: \"\(snippet)\""))
                continue
            case .block(let type, let text, let index):
                guard type == "CERTIFICATE" else {
                    decisions.append(
                        .init(action: .rejected, reason: "entry \(index) is a \"\(type)\" block, not a certificate")
                    )
                    continue
                }
                do {
                    certificate = try Certificate(pemEncoded: text)
                } catch {
                    decisions.append(
                        .init(action: .rejected, reason: "entry \(index) is not a parsable certificate: \(error)"))
                    continue
                }
            }
            let subject = certificate.subject.description
            let print = PEM.fingerprint(certificate)
            func decide(_ action: BundleDecision.Action, _ reason: String) {
                decisions.append(.init(action: action, subject: subject, fingerprint: print, reason: reason))
            }
            if known.contains(print) {
                decide(.droppedDuplicate, "already trusted (same SHA-256 of DER)")
            } else if certificate.notValidAfter < now {
                decide(.droppedExpired, "expired at \(Self.format(certificate.notValidAfter))")
            } else if certificate.notValidBefore > now {
                decide(.droppedNotYetValid, "not valid before \(Self.format(certificate.notValidBefore))")
            } else if !Self.isCA(certificate) {
                decide(.rejected, "not a CA certificate (basicConstraints CA:TRUE missing)")
            } else if let home, CertificateSubject(certificate).cluster == home {
                // Imported CAs are trusted for sync only, told apart from this cluster's own by their cluster name.
                decide(
                    .rejected,
                    "claims cluster \"\(home)\", this cluster's own name; only a rotation adds this cluster's CAs "
                        + "(clusters that federate need distinct names)"
                )
            } else {
                known.insert(print)
                certificates.append(certificate)
                decide(.added, "valid until \(Self.format(certificate.notValidAfter))")
            }
        }
        sortNewestFirst()
        let added = Set(decisions.filter { $0.action == .added }.compactMap(\.fingerprint))
        let pruned = prune(currentCA: currentCA, overlap: overlap, cap: cap, now: now)
        // A certificate added and then pruned gets only the pruning decision.
        let prunedPrints = Set(pruned.filter { $0.action != .kept }.compactMap(\.fingerprint))
        decisions.removeAll { $0.action == .added && prunedPrints.contains($0.fingerprint ?? "") }
        decisions += pruned.filter { $0.action != .kept || !added.contains($0.fingerprint ?? "") }
        return decisions
    }

    /// Drops expired and not-yet-valid certificates, superseded CAs past the overlap, and those beyond the cap.
    ///
    /// A cluster's CAs are recognised by their subject's `O`. Within one cluster, an older CA is dropped once the
    /// next newer one has been valid for longer than `overlap` — KubeVirt's rule — while CAs of other clusters stay
    /// until they expire. `currentCA` is never dropped by the cap.
    @discardableResult
    public mutating func prune(
        currentCA: Certificate? = nil,
        overlap: Duration = PKIPolicy.default.caOverlap,
        cap: Int = TrustBundle.defaultCap,
        now: Date = Date()
    ) -> [BundleDecision] {
        sortNewestFirst()
        var decisions: [BundleDecision] = []
        var keep: [Certificate] = []
        var newestPerCluster: [String: Certificate] = [:]
        for certificate in certificates {
            let subject = certificate.subject.description
            let print = PEM.fingerprint(certificate)
            func decide(_ action: BundleDecision.Action, _ reason: String) {
                decisions.append(.init(action: action, subject: subject, fingerprint: print, reason: reason))
            }
            let cluster = CertificateSubject(certificate).cluster ?? subject
            if certificate.notValidAfter < now {
                decide(.droppedExpired, "expired at \(Self.format(certificate.notValidAfter))")
                continue
            }
            if certificate.notValidBefore > now {
                decide(.droppedNotYetValid, "not valid before \(Self.format(certificate.notValidBefore))")
                continue
            }
            if let successor = newestPerCluster[cluster] {
                let since = successor.notValidBefore.addingTimeInterval(overlap.timeInterval)
                if since < now {
                    decide(
                        .droppedSuperseded,
                        "superseded by \"\(successor.subject)\" more than \(Self.format(overlap)) ago"
                    )
                    continue
                }
            }
            newestPerCluster[cluster] = certificate
            keep.append(certificate)
        }
        if keep.count > cap {
            // The newest survive; the cluster's current CA survives whatever its age.
            let current = currentCA.map(PEM.fingerprint)
            var room = cap - keep.filter { PEM.fingerprint($0) == current }.count
            keep = keep.filter { certificate in
                let print = PEM.fingerprint(certificate)
                if print == current { return true }
                if room > 0 {
                    room -= 1
                    return true
                }
                decisions.append(
                    .init(
                        action: .droppedOverCap, subject: certificate.subject.description, fingerprint: print,
                        reason: "bundle is capped at \(cap) certificates; the oldest are dropped"
                    )
                )
                return false
            }
        }
        for certificate in keep {
            decisions.append(
                .init(
                    action: .kept,
                    subject: certificate.subject.description,
                    fingerprint: PEM.fingerprint(certificate),
                    reason: "valid until \(Self.format(certificate.notValidAfter))"
                )
            )
        }
        certificates = keep
        return decisions
    }

    private mutating func sortNewestFirst() {
        // Stable: equal notBefore keeps insertion order.
        certificates = certificates.enumerated().sorted { lhs, rhs in
            lhs.element.notValidBefore != rhs.element.notValidBefore
                ? lhs.element.notValidBefore > rhs.element.notValidBefore : lhs.offset < rhs.offset
        }.map(\.element)
    }

    static func isCA(_ certificate: Certificate) -> Bool {
        if case .isCertificateAuthority = try? certificate.extensions.basicConstraints { return true }
        return false
    }

    static func format(_ date: Date) -> String {
        date.formatted(.iso8601)
    }

    static func format(_ duration: Duration) -> String {
        let seconds = Int(duration.timeInterval)
        if seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }
}
