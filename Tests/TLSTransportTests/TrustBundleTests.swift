import Foundation
import Testing
import X509

@testable import TLSTransport

@Suite("Trust bundle (kubevirt-ca semantics)")
struct TrustBundleTests {
    let now = Date()

    private func decision(
        _ decisions: [BundleDecision],
        for certificate: Certificate
    ) -> BundleDecision.Action? {
        decisions.first { $0.fingerprint == PEM.fingerprint(certificate) }?.action
    }

    @Test("a merge of valid, duplicate, expired, not-yet-valid and garbage entries takes one decision per entry")
    func mixedInbox() throws {
        let own = try TestPKI.authority("alpha", now: now)
        var bundle = TrustBundle([own.certificate])

        let remote = try TestPKI.authority("beta", now: now)
        let expired = try TestPKI.authority(
            "gamma",
            now: now.addingTimeInterval(-8 * 24 * 3600)
        )
        let future = try TestPKI.authority("delta", now: now.addingTimeInterval(24 * 3600))
        let leaf = try remote.issue(LeafRequest(role: .node, name: "b1"))
        let remotePEM = try PEM.encode([remote.certificate])
        var corrupted = try PEM.encode([own.certificate])
        corrupted = corrupted.replacingOccurrences(of: "MII", with: "MIX")
        let privateKey = try remote.certifiedKey.privateKeyPEM

        let inbox = [
            remotePEM,
            remotePEM,  // duplicate inside the inbox
            try PEM.encode([own.certificate]),  // duplicate of the bundle
            try PEM.encode([expired.certificate]),
            try PEM.encode([future.certificate]),
            try PEM.encode([leaf.certificate]),  // a leaf, not a CA
            "this is not a certificate",
            privateKey,
            corrupted,
        ].joined(separator: "\n")

        let decisions = bundle.mergeExternal(inbox, currentCA: own.certificate, now: now)

        let added = decisions.filter { $0.action == .added }
        #expect(added.count == 1)
        #expect(added.first?.fingerprint == PEM.fingerprint(remote.certificate))
        #expect(decisions.filter { $0.action == .droppedDuplicate }.count == 2)
        #expect(decision(decisions, for: expired.certificate) == .droppedExpired)
        #expect(decision(decisions, for: future.certificate) == .droppedNotYetValid)
        #expect(decision(decisions, for: leaf.certificate) == .rejected)
        let rejected = decisions.filter { $0.action == .rejected }
        #expect(rejected.count == 4)
        #expect(rejected.contains { $0.reason.contains("not PEM") && $0.reason.contains("this is not a certificate") })
        #expect(rejected.contains { $0.reason.contains("\"PRIVATE KEY\" block") })
        #expect(rejected.contains { $0.reason.contains("not a parsable certificate") })
        #expect(rejected.contains { $0.reason.contains("not a CA certificate") })
        #expect(decision(decisions, for: own.certificate) == .droppedDuplicate)
        #expect(decisions.contains { $0.action == .kept && $0.fingerprint == PEM.fingerprint(own.certificate) })

        #expect(bundle.certificates.count == 2)
        #expect(bundle.contains(own.certificate) && bundle.contains(remote.certificate))
        // Every decision names its certificate when it could be parsed.
        #expect(decisions.filter { $0.action != .rejected || $0.subject != nil }.allSatisfy { $0.subject != nil })
    }

    @Test("an external CA that claims this cluster's own name is rejected: only this cluster's rotation adds its CAs")
    func externalClaimingOwnCluster() throws {
        let own = try TestPKI.authority("alpha", now: now)
        let impostor = try TestPKI.authority("alpha", now: now)
        let remote = try TestPKI.authority("beta", now: now)
        var bundle = TrustBundle([own.certificate])
        let decisions = bundle.mergeExternal(
            try PEM.encode([impostor.certificate, remote.certificate]), currentCA: own.certificate, now: now)
        #expect(decision(decisions, for: impostor.certificate) == .rejected)
        #expect(
            decisions.contains {
                $0.action == .rejected && $0.reason.contains("cluster \"alpha\"")
                    && $0.reason.contains("this cluster's own name")
            })
        #expect(decision(decisions, for: remote.certificate) == .added)
        #expect(!bundle.contains(impostor.certificate) && bundle.contains(remote.certificate))
        // The cluster's own rotation still adds its successor CA.
        let next = try own.renewed(now: now)
        bundle.insert(next.certificate)
        #expect(bundle.contains(next.certificate))
    }

    @Test("the strict parser refuses anything but certificates")
    func strictParse() throws {
        let own = try TestPKI.authority("alpha")
        let good = try PEM.encode([own.certificate])
        #expect(try TrustBundle(pem: good).certificates.count == 1)
        #expect(try TrustBundle(pem: "  \n").certificates.isEmpty)
        let error = #expect(throws: TransportError.self) {
            try TrustBundle(pem: good + (try own.certifiedKey.privateKeyPEM))
        }
        #expect(error?.code == .malformedInput)
        #expect(throws: TransportError.self) { try TrustBundle(pem: "garbage") }
    }

    @Test("a superseded CA of the same cluster stays through the overlap window, then goes")
    func overlap() throws {
        let policy = PKIPolicy(
            caValidity: .seconds(1000), leafValidity: .seconds(100), renewalFraction: 0.8, backdating: .zero)
        let start = now.addingTimeInterval(-900)
        let old = try TestPKI.authority("alpha", now: start, policy: policy)
        let renewedAt = start.addingTimeInterval(800)
        let new = try old.renewed(now: renewedAt)
        let other = try TestPKI.authority("beta", now: start, policy: policy)  // another cluster's, as old as `old`
        var bundle = TrustBundle([old.certificate, new.certificate, other.certificate])
        #expect(bundle.certificates.first == new.certificate)

        // 100 s after renewal: within the 200 s overlap, both stay.
        var decisions = bundle.prune(
            currentCA: new.certificate, overlap: policy.caOverlap, now: renewedAt.addingTimeInterval(100))
        #expect(bundle.certificates.count == 3)
        #expect(decisions.allSatisfy { $0.action == .kept })

        // 250 s after renewal the overlap has passed (and old is still unexpired): old goes, beta stays.
        decisions = bundle.prune(
            currentCA: new.certificate, overlap: policy.caOverlap, now: renewedAt.addingTimeInterval(150))
        #expect(bundle.certificates.count == 3)
        decisions = bundle.prune(
            currentCA: new.certificate, overlap: .seconds(120), now: renewedAt.addingTimeInterval(150))
        #expect(decision(decisions, for: old.certificate) == .droppedSuperseded)
        #expect(bundle.contains(other.certificate))
        #expect(bundle.contains(new.certificate))
        #expect(!bundle.contains(old.certificate))

        // Once expired, beta goes too.
        decisions = bundle.prune(currentCA: new.certificate, now: start.addingTimeInterval(1001))
        #expect(decision(decisions, for: other.certificate) == .droppedExpired)
    }

    @Test("the bundle is capped at 50, keeping the newest and always the current CA")
    func cap() throws {
        let current = try TestPKI.authority("alpha", now: now.addingTimeInterval(-3600))
        var externals: [Certificate] = []
        for index in 0..<60 {
            externals.append(
                try TestPKI.authority("ext\(index)", now: now.addingTimeInterval(Double(-index))).certificate)
        }
        var bundle = TrustBundle([current.certificate])
        let decisions = bundle.mergeExternal(try PEM.encode(externals), currentCA: current.certificate, now: now)
        #expect(bundle.certificates.count == TrustBundle.defaultCap)
        #expect(bundle.contains(current.certificate))
        #expect(decisions.filter { $0.action == .droppedOverCap }.count == 11)
        // The oldest externals are the ones dropped.
        #expect(!bundle.contains(externals[59]))
        #expect(bundle.contains(externals[0]))
    }

    @Test("the inbox scanner separates blocks from stray text")
    func scanner() {
        let entries = PEMScanner.entries(in: "junk\n-----BEGIN X-----\nAAAA\n-----END X-----\n\n tail ")
        #expect(entries.count == 3)
        #expect(entries[0] == .garbage("junk"))
        if case .block(let type, _, let index) = entries[1] {
            #expect(type == "X" && index == 1)
        } else {
            Issue.record("expected a block")
        }
        #expect(entries[2] == .garbage("tail"))
    }
}
