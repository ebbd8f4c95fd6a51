import ControllerRuntime
import Metrics
import MetricsTestKit
import SyncController
import Testing

extension ClusterControllers {
    /// Runs the controllers on `store` while `body` runs, after they have reacted to what the store holds; `body`
    /// gets them to `settle()` after each change it makes (as an agent or a user would). Their metrics go to
    /// `metrics` (none kept without).
    static func running(
        on store: any ResourceStore, metrics: TestMetrics? = nil, _ body: (ClusterControllers) async throws -> Void
    ) async throws {
        let controllers =
            metrics.map { withMetricsFactory($0) { ClusterControllers(store: store) } }
            ?? ClusterControllers(store: store)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await controllers.run() }
            await controllers.waitForSync()
            try await controllers.settle()
            try await body(controllers)
            group.cancelAll()
        }
    }
}
