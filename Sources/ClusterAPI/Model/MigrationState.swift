/// KubeVirt's `VirtualMachineInstanceMigrationState`, as both a VMI's and a VMIM's `status.migrationState`: the flat
/// fields of one cluster's migration, and for a decentralized one the two halves each side owns.
public struct MigrationState: Codable, Sendable, Hashable {
    public var migrationUid: String?
    /// The same uid under the spelling the two halves use (`sourceState.migrationUID`), which clients reading the flat
    /// state of a VMI look for too.
    public var migrationUID: String?
    public var sourceNode: String?
    public var targetNode: String?
    public var sourcePod: String?
    public var targetPod: String?
    public var targetNodeAddress: String?
    public var targetDirectMigrationNodePorts: [String: Int]?
    public var targetNodeDomainDetected: Bool?
    public var targetNodeDomainReadyTimestamp: String?
    public var mode: String?
    public var startTimestamp: String?
    public var endTimestamp: String?
    public var completed: Bool?
    public var failed: Bool?
    public var abortRequested: Bool?
    public var abortStatus: String?
    public var failureReason: String?
    public var migrationConfiguration: JSONValue?
    /// vmsync: what the job copied so far (memory, disks, passes).
    public var progress: Progress?
    /// vmsync: the target node's run directory (the destination domain's console socket, empty disks, seeds).
    public var targetRunDirectory: String?
    /// vmsync: when libvirt's migrate call ran and when the job ended.
    public var libvirtJobStartTimestamp: String?
    public var libvirtJobEndTimestamp: String?
    /// vmsync: the guest's pause at the switchover, as libvirt measured it.
    public var downtimeMilliseconds: Int64?
    /// The source side's half of a decentralized migration (the source cluster owns it).
    public var sourceState: SourceState?
    /// The target side's half (the target cluster owns it).
    public var targetState: TargetState?

    public init() {}

    /// vmsync's `progress`: the libvirt job's phase and figures (bytes; the memory pass as `iteration`).
    public struct Progress: Codable, Sendable, Hashable {
        /// Setup, Disks, Memory, or Completed.
        public var phase: String?
        public var iteration: Int64?
        public var elapsedMilliseconds: Int64?
        public var dataTotalBytes: Int64?
        public var dataProcessedBytes: Int64?
        public var dataRemainingBytes: Int64?
        public var memoryDirtyRateBytesPerSecond: Int64?
        public var memoryBytesPerSecond: Int64?
        public var diskTotalBytes: Int64?
        public var diskProcessedBytes: Int64?

        public init(phase: String? = nil) { self.phase = phase }
    }

    /// Whether the migration has ended (either way).
    public var isCompleted: Bool { completed ?? false }

    /// Marks the migration ended in failure with `reason` at `endTimestamp` (and how an abort went, when there was one).
    public mutating func markFailed(_ reason: String, at endTimestamp: String?, abortStatus: String? = nil) {
        failed = true
        completed = true
        failureReason = reason
        self.endTimestamp = endTimestamp
        if let abortStatus { self.abortStatus = abortStatus }
    }

    /// The fields both halves carry (KubeVirt's `MigrationCommonState`).
    public struct SourceState: Codable, Sendable, Hashable {
        public var node: String?
        public var pod: String?
        public var migrationUID: String?
        public var domainName: String?
        public var domainNamespace: String?
        public var syncAddress: String?
        public var persistentStatePVCName: String?
        public var selinuxContext: String?
        public var virtualMachineInstanceUID: String?
        /// The labels the source's node selection used.
        public var nodeSelectors: [String: String]?
        /// vmsync: the UUID of the source's domain (its firmware UUID), which the guest keeps wherever it runs — the
        /// receiving VMI takes it as its own.
        public var domainUUID: String?

        public init() {}
    }

    /// The target's half: the common fields plus where and when the destination domain is ready.
    public struct TargetState: Codable, Sendable, Hashable {
        public var node: String?
        public var pod: String?
        public var migrationUID: String?
        public var domainName: String?
        public var domainNamespace: String?
        public var syncAddress: String?
        public var persistentStatePVCName: String?
        public var selinuxContext: String?
        public var virtualMachineInstanceUID: String?
        public var nodeAddress: String?
        public var directMigrationNodePorts: [String: Int]?
        public var domainDetected: Bool?
        public var domainReadyTimestamp: String?
        public var attachmentPodUID: String?
        /// vmsync: the target node's run directory (the destination domain's console socket, empty disks, seeds).
        public var runDirectory: String?
        /// vmsync: where each of the destination domain's disks lives on the target node, by guest device ("vda"):
        /// the target VM's own volumes (its DataVolumes on its StorageClass, its empty disks and seed).
        public var disks: [String: String]?
        /// vmsync: where the source node sends the streams when the target cluster has a cross-cluster gateway
        /// (its KubeVirt `crossClusterGateway`): the gateway carries them to `nodeAddress`. Unset: straight there.
        public var gateway: String?

        public init() {}
    }
}
