import Foundation
import Testing
import X509

@testable import TLSTransport

@Suite("Cluster PKI")
struct CertificateAuthorityTests {
    @Test("a new CA is an ECDSA P-256 CA valid for 7 days")
    func caShape() throws {
        let now = Date()
        let authority = try TestPKI.authority("alpha", now: now)
        let certificate = authority.certificate
        #expect(authority.clusterName == "alpha")
        #expect(certificate.signatureAlgorithm == .ecdsaWithSHA256)
        #expect(String(describing: certificate.publicKey).contains("P256"))
        guard case .isCertificateAuthority = try certificate.extensions.basicConstraints else {
            Issue.record("CA:TRUE missing")
            return
        }
        let usage = try #require(try certificate.extensions.keyUsage)
        #expect(usage.keyCertSign && usage.cRLSign)
        let lifetime = certificate.notValidAfter.timeIntervalSince(now)
        #expect(abs(lifetime - 7 * 24 * 3600) < 2)
    }

    @Test("leaves carry the role, name and the key usages of their role", arguments: PeerRole.allCases)
    func leafShape(role: PeerRole) throws {
        let now = Date()
        let authority = try TestPKI.authority("alpha", now: now)
        let leaf = try authority.issue(
            LeafRequest(role: role, name: "n1", ipAddresses: ["127.0.0.1", "::1"]), now: now)
        let certificate = leaf.certificate
        let subject = CertificateSubject(certificate)
        #expect(subject.role == role)
        #expect(subject.cluster == "alpha")
        #expect(subject.name == (role.fixedCommonName ?? "n1"))
        #expect(certificate.issuer == authority.certificate.subject)
        let usages = try #require(try certificate.extensions.extendedKeyUsage)
        #expect(usages.contains(.serverAuth) == role.servesTLS)
        #expect(usages.contains(.clientAuth) == role.actsAsTLSClient)
        #expect(try certificate.extensions.keyUsage?.digitalSignature == true)
        guard case .notCertificateAuthority = try certificate.extensions.basicConstraints else {
            Issue.record("leaf must not be a CA")
            return
        }
        let lifetime = certificate.notValidAfter.timeIntervalSince(now)
        #expect(abs(lifetime - 24 * 3600) < 2)
        let names = try #require(try certificate.extensions.subjectAlternativeNames)
        #expect(names.count == 2)
    }

    @Test("KubeVirt's sync identities use its fixed common names")
    func syncNames() throws {
        let authority = try TestPKI.authority("alpha")
        let client = try authority.issue(LeafRequest(role: .syncClient, name: "ignored"))
        let server = try authority.issue(LeafRequest(role: .syncServer, name: "ignored"))
        #expect(
            CertificateSubject(client.certificate).name == "kubevirt.io:system:client:virt-synchronization-controller")
        #expect(
            CertificateSubject(server.certificate).name == "kubevirt.io:system:node:virt-synchronization-controller")
    }

    @Test("renewal is due at 80% of the lifetime, for CA and leaf")
    func renewal() throws {
        let start = Date()
        let policy = PKIPolicy(
            caValidity: .seconds(1000), leafValidity: .seconds(100), renewalFraction: 0.8, backdating: .zero)
        let authority = try TestPKI.authority("alpha", now: start, policy: policy)
        #expect(!authority.needsRenewal(now: start.addingTimeInterval(790)))
        #expect(authority.needsRenewal(now: start.addingTimeInterval(810)))
        let leaf = try authority.issue(LeafRequest(role: .node, name: "n1"), now: start)
        #expect(!policy.needsRenewal(leaf.certificate, now: start.addingTimeInterval(79)))
        #expect(policy.needsRenewal(leaf.certificate, now: start.addingTimeInterval(81)))
        #expect(policy.caOverlap == .seconds(200))
        let successor = try authority.renewed(now: start.addingTimeInterval(810))
        #expect(successor.clusterName == "alpha")
        #expect(successor.certificate != authority.certificate)
    }

    @Test("a leaf never outlives its CA")
    func leafCappedByCA() throws {
        let start = Date()
        let policy = PKIPolicy(caValidity: .seconds(3600), leafValidity: .seconds(24 * 3600), renewalFraction: 0.8)
        let authority = try TestPKI.authority("alpha", now: start, policy: policy)
        let leaf = try authority.issue(LeafRequest(role: .node, name: "n1"), now: start)
        #expect(leaf.certificate.notValidAfter == authority.certificate.notValidAfter)
    }

    @Test(
        "issued at a fractional second, a certificate is never valid longer than the policy says (X.509 keeps whole seconds)"
    )
    func wholeSeconds() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000.9)
        let policy = PKIPolicy.leaves(validFor: 600)
        let authority = try TestPKI.authority("alpha", now: start, policy: policy)
        #expect(authority.certificate.notValidAfter <= start.addingTimeInterval(policy.caValidity.timeInterval))
        #expect(authority.certificate.notValidBefore <= start.addingTimeInterval(-policy.backdating.timeInterval))
        let leaf = try authority.issue(LeafRequest(role: .node, name: "n1"), now: start)
        #expect(
            leaf.certificate.notValidAfter <= start.addingTimeInterval(600),
            "\(leaf.certificate.notValidAfter.timeIntervalSince(start))")
        #expect(leaf.certificate.notValidAfter > start.addingTimeInterval(599))
        #expect(leaf.certificate.notValidBefore <= start.addingTimeInterval(-policy.backdating.timeInterval))
    }

    @Test("PEM in and out round-trips; a key that does not match is refused")
    func pemRoundTrip() throws {
        let authority = try TestPKI.authority("alpha")
        let leaf = try authority.issue(LeafRequest(role: .user, name: "alice"))
        let parsed = try CertifiedKey(certificatePEM: try leaf.certificatePEM, privateKeyPEM: try leaf.privateKeyPEM)
        #expect(parsed == leaf)
        let other = try authority.issue(LeafRequest(role: .user, name: "bob"))
        let error = #expect(throws: TransportError.self) {
            try CertifiedKey(certificatePEM: try leaf.certificatePEM, privateKeyPEM: try other.privateKeyPEM)
        }
        #expect(error?.code == .malformedInput)
        #expect(error?.message.contains("does not match") == true)
    }

    @Test("bad names, roles and addresses are refused with a reason")
    func badInput() throws {
        #expect(throws: TransportError.self) { try TestPKI.authority("Not A Name") }
        let authority = try TestPKI.authority("alpha")
        let badName = #expect(throws: TransportError.self) {
            try authority.issue(LeafRequest(role: .node, name: "../etc"))
        }
        #expect(badName?.code == .invalidArgument)
        let badIP = #expect(throws: TransportError.self) {
            try authority.issue(LeafRequest(role: .node, name: "n1", ipAddresses: ["300.1.1.1"]))
        }
        #expect(badIP?.message.contains("300.1.1.1") == true)
        let badRole = #expect(throws: TransportError.self) { try PeerRole(parsing: "admin") }
        #expect(badRole?.message.contains("known roles") == true)
        let notCA = try authority.issue(LeafRequest(role: .node, name: "n1"))
        #expect(throws: TransportError.self) { try CertificateAuthority(certifiedKey: notCA) }
    }
}

@Suite("Leaf renewal")
struct LeafRenewalTests {
    @Test("a leaf past 80% of its life is reissued and loaded; before that nothing changes")
    func renewal() async throws {
        let start = Date()
        let authority = try TestPKI.authority("alpha", now: start)
        let request = LeafRequest(role: .node, name: "a1")
        let provider = try TLSContextProvider(
            identity: try authority.issue(request, now: start),
            trust: TrustBundle([authority.certificate])
        )
        let original = provider.identity.certificate
        let renewal = LeafRenewal(request: request, provider: provider) { try authority.issue($0) }
        #expect(try await !renewal.renewIfDue(now: start.addingTimeInterval(0.79 * 24 * 3600)))
        #expect(provider.identity.certificate == original)
        #expect(try await renewal.renewIfDue(now: start.addingTimeInterval(0.81 * 24 * 3600)))
        let renewed = provider.identity.certificate
        #expect(renewed != original)
        #expect(CertificateSubject(renewed).name == "a1")
        #expect(CertificateSubject(renewed).role == .node)
    }

    @Test("a failing issuer leaves the current certificate in place and reports the error")
    func failure() async throws {
        let start = Date()
        let authority = try TestPKI.authority("alpha", now: start)
        let request = LeafRequest(role: .node, name: "a1")
        let provider = try TLSContextProvider(
            identity: try authority.issue(request, now: start), trust: TrustBundle([authority.certificate]))
        let original = provider.identity.certificate
        let renewal = LeafRenewal(request: request, provider: provider) { _ in
            throw TransportError(.connectionFailed, "controller unreachable")
        }
        await #expect(throws: TransportError.self) {
            try await renewal.renewIfDue(now: start.addingTimeInterval(23 * 3600))
        }
        #expect(provider.identity.certificate == original)
    }
}
