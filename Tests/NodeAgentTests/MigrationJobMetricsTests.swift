import Hypervisor
import Metrics
import MetricsTestKit
import Testing

@testable import NodeAgent

/// What a node records of the migrations it takes part in (the bed's Prometheus test sees them end to end).
@Suite("Migration job metrics")
struct MigrationJobMetricsTests {
    @Test(
        "the source records a successful job's wall time and the bytes its final statistics say it sent; the target the downtime"
    )
    func figures() throws {
        let metrics = TestMetrics()
        let jobs = withMetricsFactory(metrics) { MigrationJobMetrics() }
        jobs.recordSent(
            duration: .milliseconds(1500),
            statistics: JobStatistics(parameters: ["data_processed": 160 << 20, "time_elapsed": 1400]))
        jobs.recordSent(duration: .seconds(2), statistics: nil)
        jobs.recordDowntime(milliseconds: 87)
        #expect(try metrics.expectTimer("vmsync_migration_duration_seconds").values == [1_500_000_000, 2_000_000_000])
        #expect(
            try metrics.expectRecorder("vmsync_migration_data_processed_bytes").values == [Double(160 << 20)],
            "no statistics, no bytes")
        #expect(try metrics.expectTimer("vmsync_migration_downtime_seconds").values == [87_000_000])
        #expect(metrics.counters.isEmpty, "counting migrations is the controller's")
    }
}
