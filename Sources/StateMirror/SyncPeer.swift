public import ClusterAPI
public import Foundation
import TLSTransport
public import X509

/// Why a sync call is refused, with the gRPC status it travels as and the words the peer and the VMIM read.
public struct SyncRefusal: Error, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// The request itself is unusable (no migrationID, no status, garbage).
        case invalidArgument
        /// No migration of this cluster has the migrationID (the peer retries: its half may come first).
        case notFound
        /// The migration is bound to another peer.
        case permissionDenied
        /// This cluster cannot take it now (its store failed); the peer retries.
        case unavailable
    }

    public let code: Code
    public let description: String

    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }
}

/// The verified controller on the other end of a sync call: the cluster whose CA vouched for it, that CA, and where it
/// called from.
public struct SyncPeer: Sendable, Hashable, CustomStringConvertible {
    /// The peer's cluster (the `O` of its certificate and of the CA it chains to: `PeerVerifier` refuses a mismatch).
    public var cluster: String
    /// SHA-256 of the CA certificate the chain was verified to (hex).
    public var caFingerprint: String
    /// The peer's host (no port: each connection has its own).
    public var host: String

    public init(cluster: String, caFingerprint: String, host: String) {
        self.cluster = cluster
        self.caFingerprint = caFingerprint
        self.host = host
    }

    /// The peer of a verified chain (leaf first, trusted CA last) and gRPC's `remotePeer` (`ipv4:127.0.0.1:4242`,
    /// `ipv6:[::1]:4242`); nil when the chain is empty or its leaf names no cluster.
    public init?(validatedChain chain: [Certificate], remotePeer: String) {
        guard let leaf = chain.first, let anchor = chain.last, let cluster = CertificateSubject(leaf).cluster else {
            return nil
        }
        self.cluster = cluster
        self.caFingerprint = PEM.fingerprint(anchor)
        self.host = Self.host(of: remotePeer)
    }

    /// The host of gRPC's peer string.
    static func host(of remotePeer: String) -> String {
        var text = Substring(remotePeer)
        for scheme in ["ipv4:", "ipv6:", "unix:"] where text.hasPrefix(scheme) { text = text.dropFirst(scheme.count) }
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            return String(text[text.index(after: text.startIndex)..<close])
        }
        if let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon { return String(text[..<colon]) }
        return String(text)
    }

    public var description: String { "cluster \"\(cluster)\" at \(host)" }

    /// The binding of a migration to this peer as the VMIM records it.
    public func binding(at date: Date = Date()) -> SynchronizationPeer {
        SynchronizationPeer(
            cluster: cluster, caFingerprint: caFingerprint, address: host, boundTimestamp: Migration.timestamp(date))
    }

    /// Admits this peer to the migration `migrationID` bound to `existing` (nil: not bound yet) and returns the binding
    /// to keep: the first verified peer is bound, the same cluster again is admitted (from another address, or after
    /// its CA rotated), any other cluster is refused with PermissionDenied.
    public func admit(to migrationID: String, boundTo existing: SynchronizationPeer?) throws(SyncRefusal)
        -> SynchronizationPeer
    {
        guard let existing else { return binding() }
        guard existing.cluster == cluster else {
            let first = existing.address.map { " (first synced from \($0))" } ?? ""
            throw SyncRefusal(
                .permissionDenied,
                "migrationID \(migrationID) is synchronized with cluster \"\(existing.cluster)\"\(first); \(self) may not touch it"
            )
        }
        return existing
    }
}
