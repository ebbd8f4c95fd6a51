internal import CLibvirt

/// How a live migration is run: libvirt flags and parameters as KubeVirt uses them.
public struct MigrationOptions: Sendable, Hashable {
    /// Which disks are copied to the destination.
    public enum StorageCopy: Sendable, Hashable {
        /// Shared storage: nothing is copied.
        case none
        /// Full copy of the listed disks (`NON_SHARED_DISK`).
        case full
        /// Copy of the listed disks onto destination images that share a backing file (`NON_SHARED_INC`).
        case incremental
    }

    /// The destination libvirt URI the source daemon connects to (peer-to-peer), e.g. a tunnelled unix socket.
    public var destinationURI: String
    /// Where QEMU sends memory (`tcp://host:port` or `unix:///path`), or nil for libvirt's choice.
    public var migrationURI: String?
    /// Where QEMU mirrors disks (`tcp://…` or `unix:///…`), or nil to use the migration host.
    public var disksURI: String?
    /// The domain XML to define on the destination (disk paths changed, etc.), or nil for the source's.
    public var destinationXML: String?
    /// The domain's name on the destination (libvirt's `destination_name`), or nil to keep the source's.
    public var destinationName: String?
    /// Disk copy mode.
    public var storage: StorageCopy
    /// Guest disk names (`vda`) to copy; required when `storage` is not `.none`.
    public var disks: [String]
    /// Bandwidth limit in MiB/s, or nil for unlimited.
    public var bandwidthMiBPerSecond: UInt64?
    /// Maximum tolerated downtime, or nil for QEMU's default (300 ms).
    public var maxDowntime: Duration?
    /// The tolerated downtime the job starts with, doubled with every memory pass after the second until it reaches
    /// `maxDowntime`: a guest whose memory converges switches over after a short pause (the first pass finishes while
    /// it runs), one that keeps dirtying memory still gets the full limit a few passes later. Nil: `maxDowntime`
    /// throughout.
    public var initialDowntime: Duration?
    /// Let QEMU throttle the guest's CPUs when memory does not converge.
    public var autoConverge: Bool
    /// Allow switching to post-copy (`startPostCopy` triggers the switch).
    public var allowPostCopy: Bool
    /// Keep the domain defined on the destination (KubeVirt: yes).
    public var persistOnDestination: Bool
    /// Remove the source definition after success (KubeVirt: yes).
    public var undefineSource: Bool
    /// Migrate even though libvirt cannot tell that disks which are not copied live on shared storage (libvirt
    /// recognises NFS, GlusterFS, Ceph and the like; a directory the operator knows every node sees — the test
    /// bed's shared directory, a cluster filesystem libvirt does not detect — needs this). `VIR_MIGRATE_UNSAFE`.
    public var allowUnsafe: Bool
    /// Memory over this many connections at once (QEMU's multifd, `VIR_MIGRATE_PARALLEL`), or nil for one stream.
    public var parallelConnections: Int?
    /// Whether the guest runs while its memory is copied (`.live`) or is paused for it (`.paused`, for guests whose
    /// memory a live copy would corrupt: `MemoryCopy.liveCopyHazard`).
    public var memoryCopy: MemoryCopy

    /// Options for a peer-to-peer migration to `destinationURI` (live unless `memoryCopy` says otherwise).
    public init(
        destinationURI: String,
        migrationURI: String? = nil,
        disksURI: String? = nil,
        destinationXML: String? = nil,
        destinationName: String? = nil,
        storage: StorageCopy = .none,
        disks: [String] = [],
        bandwidthMiBPerSecond: UInt64? = nil,
        maxDowntime: Duration? = nil,
        initialDowntime: Duration? = nil,
        autoConverge: Bool = false,
        allowPostCopy: Bool = false,
        persistOnDestination: Bool = true,
        undefineSource: Bool = true,
        allowUnsafe: Bool = false,
        parallelConnections: Int? = nil,
        memoryCopy: MemoryCopy = .live
    ) {
        self.destinationURI = destinationURI
        self.migrationURI = migrationURI
        self.disksURI = disksURI
        self.destinationXML = destinationXML
        self.destinationName = destinationName
        self.storage = storage
        self.disks = disks
        self.bandwidthMiBPerSecond = bandwidthMiBPerSecond
        self.maxDowntime = maxDowntime
        self.initialDowntime = initialDowntime
        self.autoConverge = autoConverge
        self.allowPostCopy = allowPostCopy
        self.persistOnDestination = persistOnDestination
        self.undefineSource = undefineSource
        self.allowUnsafe = allowUnsafe
        self.parallelConnections = parallelConnections
        self.memoryCopy = memoryCopy
    }

    /// Checks the combination; the error names what is wrong.
    public func validate(domain: String) throws(HypervisorError) {
        func invalid(_ text: String) -> HypervisorError {
            HypervisorError(.invalidSpec, "migration of domain \"\(domain)\": \(text)")
        }
        guard !destinationURI.isEmpty else { throw invalid("a destination URI is required") }
        switch storage {
        case .none:
            if !disks.isEmpty { throw invalid("disks \(disks) are listed but storage copy is off") }
            if disksURI != nil { throw invalid("a disks URI is set but storage copy is off") }
        case .full, .incremental:
            if disks.isEmpty { throw invalid("storage copy needs the disks to copy (e.g. [\"vda\"])") }
        }
        for uri in [migrationURI, disksURI].compactMap({ $0 })
        where !(uri.hasPrefix("tcp://") || uri.hasPrefix("unix://")) {
            throw invalid("\"\(uri)\" must be a tcp:// or unix:// URI")
        }
        if let parallelConnections, !(2...255).contains(parallelConnections) {
            throw invalid("parallel connections must be 2…255, not \(parallelConnections)")
        }
        if let maxDowntime, maxDowntime <= .zero { throw invalid("the maximum downtime must be positive") }
        if let initialDowntime {
            guard initialDowntime > .zero else { throw invalid("the initial downtime must be positive") }
            let ceiling = maxDowntime ?? Self.qemuDefaultDowntime
            if initialDowntime > ceiling {
                throw invalid("the initial downtime (\(initialDowntime)) exceeds the maximum downtime (\(ceiling))")
            }
        }
        if memoryCopy == .paused && allowPostCopy {
            throw invalid("post-copy needs a live memory copy; the guest is paused for this one")
        }
        if let bandwidthMiBPerSecond, bandwidthMiBPerSecond == 0 {
            throw invalid("a bandwidth of 0 MiB/s would never finish; leave it unset for unlimited")
        }
    }

    /// QEMU's downtime limit when none is set.
    public static let qemuDefaultDowntime: Duration = .milliseconds(300)

    /// The downtime limit for memory pass `iteration` (libvirt's `memory_iteration`, 1 during the first pass): the
    /// initial downtime for the first two passes, then doubled per pass up to the maximum; nil when nothing is set
    /// (QEMU's default applies) or the memory copy is paused (the whole copy is downtime).
    public func downtimeLimit(iteration: UInt64) -> Duration? {
        guard memoryCopy == .live else { return nil }
        guard let initialDowntime else { return maxDowntime }
        let ceiling = maxDowntime ?? Self.qemuDefaultDowntime
        var limit = initialDowntime
        var pass: UInt64 = 2
        while pass < iteration && limit < ceiling {
            limit = limit * 2
            pass += 1
        }
        return min(limit, ceiling)
    }

    /// The libvirt flags: PEER2PEER (the source daemon drives the destination), LIVE unless the memory copy is paused.
    var flags: UInt32 {
        var flags = VIR_MIGRATE_PEER2PEER.rawValue | VIR_MIGRATE_ABORT_ON_ERROR.rawValue
        if memoryCopy == .live { flags |= VIR_MIGRATE_LIVE.rawValue }
        if persistOnDestination { flags |= VIR_MIGRATE_PERSIST_DEST.rawValue }
        if undefineSource { flags |= VIR_MIGRATE_UNDEFINE_SOURCE.rawValue }
        switch storage {
        case .none: break
        case .full: flags |= VIR_MIGRATE_NON_SHARED_DISK.rawValue
        case .incremental: flags |= VIR_MIGRATE_NON_SHARED_INC.rawValue
        }
        if autoConverge { flags |= VIR_MIGRATE_AUTO_CONVERGE.rawValue }
        if allowPostCopy { flags |= VIR_MIGRATE_POSTCOPY.rawValue }
        if allowUnsafe { flags |= VIR_MIGRATE_UNSAFE.rawValue }
        if parallelConnections != nil { flags |= VIR_MIGRATE_PARALLEL.rawValue }
        return flags
    }

    /// The typed parameters of virDomainMigrateToURI3, as (name, value) pairs in order.
    var parameters: [(name: String, value: TypedValue)] {
        var result: [(String, TypedValue)] = []
        if let migrationURI { result.append(("migrate_uri", .string(migrationURI))) }
        if let disksURI { result.append(("disks_uri", .string(disksURI))) }
        if let destinationXML { result.append(("destination_xml", .string(destinationXML))) }
        if let destinationName { result.append(("destination_name", .string(destinationName))) }
        for disk in disks { result.append(("migrate_disks", .string(disk))) }
        if let bandwidthMiBPerSecond { result.append(("bandwidth", .unsigned(bandwidthMiBPerSecond))) }
        if let parallelConnections { result.append(("parallel.connections", .int(Int32(parallelConnections)))) }
        return result
    }

    /// A typed-parameter value.
    enum TypedValue: Hashable {
        case string(String)
        case unsigned(UInt64)
        case int(Int32)
    }
}
