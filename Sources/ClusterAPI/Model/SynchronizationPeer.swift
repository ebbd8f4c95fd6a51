/// vmsync: the cluster a decentralized migration synchronizes with, bound by the first verified exchange for its
/// migrationID (`status.synchronizationPeer` of the VMIM). Any other cluster touching the migration is refused.
public struct SynchronizationPeer: Codable, Sendable, Hashable {
    /// The peer's cluster: the `O` of its certificate and of the CA that vouched for it.
    public var cluster: String
    /// SHA-256 of that CA's certificate when the peer was bound (hex).
    public var caFingerprint: String?
    /// Where the peer called from (its host), when it called first.
    public var address: String?
    /// When the binding was made.
    public var boundTimestamp: String?

    public init(cluster: String, caFingerprint: String? = nil, address: String? = nil, boundTimestamp: String? = nil) {
        self.cluster = cluster
        self.caFingerprint = caFingerprint
        self.address = address
        self.boundTimestamp = boundTimestamp
    }
}
