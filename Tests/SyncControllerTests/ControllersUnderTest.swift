import ControllerRuntime
import SyncController
import Testing

extension ClusterControllers {
    /// Runs the controllers on `store` while `body` runs, after they have reacted to what the store holds; `body`
    /// gets them to `settle()` after each change it makes (as an agent or a user would).
    static func running(on store: any ResourceStore, _ body: (ClusterControllers) async throws -> Void) async throws {
        let controllers = ClusterControllers(store: store)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await controllers.run() }
            await controllers.waitForSync()
            try await controllers.settle()
            try await body(controllers)
            group.cancelAll()
        }
    }
}
