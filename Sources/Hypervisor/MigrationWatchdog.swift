/// The two migration timeouts of Harvester/KubeVirt, as a pure state machine fed with job statistics.
///
/// Completion: `completionTimeoutPerGiB` seconds per GiB of data to move (memory plus copied disks, rounded up to
/// whole GiB, at least one). Progress: the job is abandoned when nothing advanced — remaining data shrinking,
/// processed data growing or a new memory iteration — for `progressTimeout`.
public struct MigrationWatchdog: Sendable, Hashable {
    /// Which timeout fired.
    public enum Verdict: Sendable, Hashable, CustomStringConvertible {
        /// The whole migration took longer than allowed.
        case completionTimeout(limit: Duration)
        /// Nothing advanced for the allowed time.
        case progressTimeout(limit: Duration)

        public var description: String {
            switch self {
            case .completionTimeout(let limit): "completion timeout of \(limit.secondsText) exceeded"
            case .progressTimeout(let limit): "no progress within the progress timeout of \(limit.secondsText)"
            }
        }
    }

    /// The completion limit for this migration.
    public let completionLimit: Duration
    /// The progress limit.
    public let progressLimit: Duration

    private var lastProgressAt: Duration = .zero
    private var lastRemaining: UInt64?
    private var lastProcessed: UInt64?
    private var lastIteration: UInt64?

    /// A watchdog for moving `bytes` (memory plus copied disks) with KubeVirt's settings (defaults 150 s and 150 s).
    public init(bytes: UInt64, completionTimeoutPerGiB: Int = 150, progressTimeout: Int = 150) {
        self.init(
            bytes: bytes,
            timeouts: MigrationTimeouts(
                completionPerGiB: .seconds(completionTimeoutPerGiB), progress: .seconds(progressTimeout)))
    }

    /// A watchdog for moving `bytes` with the given limits.
    public init(bytes: UInt64, timeouts: MigrationTimeouts) {
        let gib: UInt64 = 1 << 30
        let wholeGiB = max(1, (bytes + gib - 1) / gib)
        completionLimit = timeouts.completionPerGiB * Int(wholeGiB)
        progressLimit = timeouts.progress
    }

    /// Takes a sample taken `elapsed` after the job started; returns the timeout that fired, if any.
    public mutating func observe(_ statistics: JobStatistics, elapsed: Duration) -> Verdict? {
        let remaining = statistics.dataRemaining
        let processed = statistics.dataProcessed
        let iteration = statistics.memoryIteration
        let advanced =
            isSmaller(remaining, than: lastRemaining) || isSmaller(lastProcessed, than: processed)
            || isSmaller(lastIteration, than: iteration)
        // The progress timeout is about copying ("no progress in copying memory", seed 000): while libvirt still sets
        // up the destination nothing is being copied yet, and the completion timeout bounds that phase.
        if advanced || statistics.phase == .setup
            || (lastRemaining == nil && lastProcessed == nil && lastIteration == nil)
        {
            lastProgressAt = elapsed
        }
        lastRemaining = remaining ?? lastRemaining
        lastProcessed = processed ?? lastProcessed
        lastIteration = iteration ?? lastIteration
        if elapsed > completionLimit { return .completionTimeout(limit: completionLimit) }
        if elapsed - lastProgressAt > progressLimit { return .progressTimeout(limit: progressLimit) }
        return nil
    }

    private func isSmaller(_ lhs: UInt64?, than rhs: UInt64?) -> Bool {
        guard let lhs, let rhs else { return false }
        return lhs < rhs
    }
}

/// The two migration timeouts as durations (KubeVirt configures them in whole seconds).
public struct MigrationTimeouts: Sendable, Hashable {
    /// Allowed time per GiB of memory plus copied disks.
    public var completionPerGiB: Duration
    /// Allowed time without progress.
    public var progress: Duration

    /// Creates the timeouts.
    public init(completionPerGiB: Duration, progress: Duration) {
        self.completionPerGiB = completionPerGiB
        self.progress = progress
    }

    /// KubeVirt's defaults: 150 s per GiB, 150 s without progress.
    public static let kubeVirtDefaults = MigrationTimeouts(completionPerGiB: .seconds(150), progress: .seconds(150))
}

extension Duration {
    /// "150 s", "2.5 s".
    var secondsText: String {
        let (seconds, attoseconds) = components
        let tenths = attoseconds / 100_000_000_000_000_000
        return tenths == 0 ? "\(seconds) s" : "\(seconds).\(tenths) s"
    }
}
