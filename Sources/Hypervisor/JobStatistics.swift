internal import CLibvirt

/// A migration job's statistics as libvirt reports them (`virDomainGetJobStats`); absent fields are nil.
public struct JobStatistics: Sendable, Hashable {
    /// Milliseconds since the job started.
    public var timeElapsedMs: UInt64?
    /// All data (memory + disks): total, processed and remaining bytes.
    public var dataTotal: UInt64?, dataProcessed: UInt64?, dataRemaining: UInt64?
    /// Memory: total, processed and remaining bytes.
    public var memoryTotal: UInt64?, memoryProcessed: UInt64?, memoryRemaining: UInt64?
    /// Pages dirtied per second.
    public var memoryDirtyRate: UInt64?
    /// Completed pre-copy iterations over memory.
    public var memoryIteration: UInt64?
    /// Memory transfer rate, bytes per second.
    public var memoryBytesPerSecond: UInt64?
    /// Disks being mirrored: total, processed and remaining bytes.
    public var diskTotal: UInt64?, diskProcessed: UInt64?, diskRemaining: UInt64?
    /// Disk transfer rate, bytes per second.
    public var diskBytesPerSecond: UInt64?
    /// Expected downtime while running; the actual downtime once completed (ms).
    public var downtimeMs: UInt64?
    /// Setup time (ms).
    public var setupTimeMs: UInt64?
    /// Percentage by which auto-converge throttles the guest's CPUs.
    public var autoConvergeThrottle: UInt64?
    /// Pages the destination requested from the source after the switch to post-copy.
    public var postcopyRequests: UInt64?
    /// What kind of job the statistics belong to.
    public var kind: Kind = .unbounded

    /// libvirt's job types.
    public enum Kind: Sendable, Hashable {
        /// Running, with a known end (`data_remaining` is meaningful).
        case bounded
        /// Running, end unknown.
        case unbounded
        /// Finished successfully.
        case completed
        /// Finished with an error.
        case failed
        /// Aborted.
        case cancelled

        init(libvirt value: Int32) {
            switch UInt32(bitPattern: value) {
            case VIR_DOMAIN_JOB_BOUNDED.rawValue: self = .bounded
            case VIR_DOMAIN_JOB_COMPLETED.rawValue: self = .completed
            case VIR_DOMAIN_JOB_FAILED.rawValue: self = .failed
            case VIR_DOMAIN_JOB_CANCELLED.rawValue: self = .cancelled
            default: self = .unbounded
            }
        }
    }

    /// Reads the statistics from libvirt's parameter names.
    public init(parameters: [String: UInt64]) {
        timeElapsedMs = parameters["time_elapsed"]
        dataTotal = parameters["data_total"]
        dataProcessed = parameters["data_processed"]
        dataRemaining = parameters["data_remaining"]
        memoryTotal = parameters["memory_total"]
        memoryProcessed = parameters["memory_processed"]
        memoryRemaining = parameters["memory_remaining"]
        memoryDirtyRate = parameters["memory_dirty_rate"]
        memoryIteration = parameters["memory_iteration"]
        memoryBytesPerSecond = parameters["memory_bps"]
        diskTotal = parameters["disk_total"]
        diskProcessed = parameters["disk_processed"]
        diskRemaining = parameters["disk_remaining"]
        diskBytesPerSecond = parameters["disk_bps"]
        downtimeMs = parameters["downtime"]
        setupTimeMs = parameters["setup_time"]
        autoConvergeThrottle = parameters["auto_converge_throttle"]
        postcopyRequests = parameters["memory_postcopy_requests"]
    }

    /// Which part of the migration the job is in.
    public enum Phase: Sendable, Hashable {
        /// Nothing transferred yet.
        case setup
        /// Disks are being mirrored; memory has not started.
        case disks
        /// Memory pre-copy, iteration n (1-based).
        case memory(iteration: UInt64)
    }

    /// The phase these statistics show.
    public var phase: Phase {
        if let iteration = memoryIteration, iteration > 0 || (memoryProcessed ?? 0) > 0 {
            return .memory(iteration: max(iteration, 1))
        }
        if (diskTotal ?? 0) > 0 { return .disks }
        if (memoryProcessed ?? 0) > 0 { return .memory(iteration: 1) }
        return .setup
    }
}
