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
            case .completionTimeout(let limit): "completion timeout of \(limit.components.seconds) s exceeded"
            case .progressTimeout(let limit): "no progress for the progress timeout of \(limit.components.seconds) s"
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
        let gib: UInt64 = 1 << 30
        let wholeGiB = max(1, (bytes + gib - 1) / gib)
        completionLimit = .seconds(Int64(completionTimeoutPerGiB) * Int64(wholeGiB))
        progressLimit = .seconds(progressTimeout)
    }

    /// Takes a sample taken `elapsed` after the job started; returns the timeout that fired, if any.
    public mutating func observe(_ statistics: JobStatistics, elapsed: Duration) -> Verdict? {
        let remaining = statistics.dataRemaining
        let processed = statistics.dataProcessed
        let iteration = statistics.memoryIteration
        let advanced = isSmaller(remaining, than: lastRemaining) || isSmaller(lastProcessed, than: processed)
            || isSmaller(lastIteration, than: iteration)
        if advanced || (lastRemaining == nil && lastProcessed == nil && lastIteration == nil) {
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
