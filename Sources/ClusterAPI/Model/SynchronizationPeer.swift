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

/// vmsync: the durable outbox of one side of a decentralized migration (`status.synchronizationDelivery` of its VMIM):
/// what was last delivered to the peer (a digest of the VMI status sent), and the attempts since. A status whose digest
/// differs from the delivered one is (re)sent, after a controller restart too.
public struct SynchronizationDelivery: Codable, Sendable, Hashable {
    /// Digest of the last status the peer acknowledged.
    public var deliveredDigest: String?
    public var deliveredTimestamp: String?
    /// Where it went.
    public var peerAddress: String?
    /// Failed attempts since the last delivery, and why the last one failed.
    public var failedAttempts: Int64?
    public var lastError: String?
    /// When the last attempt failed.
    public var lastAttemptTimestamp: String?

    public init() {}
}

extension Migration {
    /// KubeVirt's finalizer on both VMIMs of a decentralized migration: deleting either cancels both.
    public static let synchronizationFinalizer = "synchronization.kubevirt.io/migrationFinalizer"
    /// KubeVirt's feature gate for decentralized live migration.
    public static let decentralizedFeatureGate = "DecentralizedLiveMigration"
    /// KubeVirt's annotation on a receiving VM: the run strategy it takes once the migration succeeded.
    public static let restoreRunStrategyAnnotation = "kubevirt.io/restore-run-strategy"
    /// vmsync: on a VMI created by a WaitAsReceiver VM: the scheduler leaves it to the migration that fills it.
    public static let receiverAnnotation = "vmsync.io/migration-receiver"
    /// vmsync: on a VM whose guest left by a decentralized migration: the uid of the VMI that left (the VM was halted
    /// for it once; a later start is the user's).
    public static let migratedOutAnnotation = "vmsync.io/migrated-out"
    /// vmsync: the reason of a source VMI whose guest left by a decentralized migration (Succeeded).
    public static let migratedAwayReason = "MigratedAway"
}
