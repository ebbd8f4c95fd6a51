import Hypervisor
import Metrics

/// The figures of a migration only a node has, each recorded once per migration by the one node that has it:
///
/// - the source, after a successful job: `vmsync_migration_duration_seconds` (the libvirt job's wall time, from the
///   migrate call to its return) and `vmsync_migration_data_processed_bytes` (memory and disks sent, from the job's
///   final statistics as the source saw them);
/// - the target, once libvirt's account of the completed incoming job is read: `vmsync_migration_downtime_seconds`.
///
/// Counting migrations (`vmsync_migrations_total{result}`) is the controller's alone, so a `sum()` over the cluster's
/// processes counts each migration once; these histograms describe successful migrations only (a failed job's
/// partial figures would blur them).
struct MigrationJobMetrics: Sendable {
    private let duration: Timer
    private let downtime: Timer
    private let dataProcessed: Recorder

    init() {
        duration = Timer(label: Self.durationLabel)
        downtime = Timer(label: Self.downtimeLabel)
        dataProcessed = Recorder(label: Self.dataProcessedLabel, aggregate: true)
    }

    static let durationLabel = "vmsync_migration_duration_seconds"
    static let downtimeLabel = "vmsync_migration_downtime_seconds"
    static let dataProcessedLabel = "vmsync_migration_data_processed_bytes"

    /// The source's figures of a job that succeeded: its wall time, and the bytes its final statistics say it sent.
    func recordSent(duration: Duration, statistics: JobStatistics?) {
        self.duration.record(duration: duration)
        if let bytes = statistics?.dataProcessed { dataProcessed.record(Int64(clamping: bytes)) }
    }

    /// The target's figure: the downtime libvirt measured for the completed incoming job.
    func recordDowntime(milliseconds: UInt64) {
        downtime.record(duration: .milliseconds(Int64(clamping: milliseconds)))
    }
}
