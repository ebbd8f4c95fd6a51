import BedTesting
import Testing

/// The end-to-end suites: a cluster (controller, node agents, syncctl, Prometheus) on the local bed, real guests moved
/// between its nodes. One after another, and one bed at a time with the Hypervisor integration suites.
@Suite("End to end: clusters on the bed", .serialized, .enabled(if: canRunTestBed))
enum EndToEnd {}
