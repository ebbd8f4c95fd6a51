import ClusterAPI
import ControllerRuntime
import Logging
import Metrics
import MetricsTestKit
import Synchronization
import Testing

/// A reconciler that fails a given number of times per key, then succeeds (or asks to be requeued once).
final class ScriptedReconciler: Reconciler {
    let name = "scripted"
    let failuresPerKey: Int
    let requeueOnce: Bool
    let calls = Mutex<[ObjectKey: Int]>([:])
    let concurrent = Mutex<(now: Int, most: Int)>((0, 0))

    init(failuresPerKey: Int, requeueOnce: Bool = false) {
        self.failuresPerKey = failuresPerKey
        self.requeueOnce = requeueOnce
    }

    struct Transient: Error {}

    func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        concurrent.withLock {
            $0.now += 1
            $0.most = max($0.most, $0.now)
        }
        defer { concurrent.withLock { $0.now -= 1 } }
        try await Task.sleep(for: .milliseconds(2))
        let count = calls.withLock { calls -> Int in
            calls[key, default: 0] += 1
            return calls[key, default: 0]
        }
        if count <= failuresPerKey { throw Transient() }
        if requeueOnce && count == failuresPerKey + 1 { return .requeue(after: .milliseconds(30)) }
        return .done
    }
}

@Suite("Controller: workers over the queue")
struct ControllerTests {
    /// The failures these tests provoke on purpose are not worth a log line each.
    let quiet: Logger = {
        var logger = Logger(label: "test.controller")
        logger.logLevel = .critical
        return logger
    }()

    func waitFor(_ what: String, _ condition: () -> Bool) async {
        // Generous: a loaded machine (the whole tier on two cores) starves the cooperative pool for seconds.
        let deadline = ContinuousClock.now + .seconds(30)
        while !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        #expect(condition(), "\(what)")
    }

    @Test(
        "a failing reconcile is retried with backoff until it succeeds, and the outcomes are counted (vmsync_reconcile_total, the duration, the queue depth)"
    )
    func retriesFailures() async throws {
        let reconciler = ScriptedReconciler(failuresPerKey: 2)
        let metrics = TestMetrics()
        let controller = withMetricsFactory(metrics) {
            Controller(
                reconciler, workers: 3, queue: WorkQueue(backoff: .init(base: .milliseconds(10), maximum: .seconds(1))),
                logger: quiet)
        }
        func reconciles(_ result: String) -> Int64 {
            metrics.counterTotal(
                label: "vmsync_reconcile_total", dimensions: [("controller", "scripted"), ("result", result)])
        }
        let depth = try metrics.expectGauge("vmsync_workqueue_depth", [("controller", "scripted")])
        #expect(depth.lastValue == 0, "the depth is there before any key")
        let keys = (0..<5).map { ObjectKey(namespace: "default", name: "vm-\($0)") }
        for key in keys { controller.enqueue(key) }
        #expect(depth.lastValue == 5, "five keys wait")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await controller.run() }
            await waitFor("every key reconciled three times") {
                reconciler.calls.withLock { calls in keys.allSatisfy { calls[$0] == 3 } }
            }
            await waitFor("every outcome counted") { reconciles("success") == 5 }
            #expect(reconciles("error") == 10)
            #expect(reconciles("success") == 5)
            #expect(reconciles("requeue") == 0)
            #expect(keys.allSatisfy { controller.queue.failureCount($0) == 0 }, "success forgets the failures")
            group.cancelAll()
        }
        #expect(depth.lastValue == 0, "nothing waits at the end")
        #expect(depth.values.contains(5))
        let durations = try metrics.expectTimer("vmsync_reconcile_duration_seconds", [("controller", "scripted")])
        #expect(durations.values.count == 15, "one duration per reconcile")
        #expect(reconciler.concurrent.withLock { $0.most } <= 3)
    }

    @Test("requeue comes back after its delay; one key is never reconciled twice at once")
    func requeueAndExclusivity() async {
        let reconciler = ScriptedReconciler(failuresPerKey: 0, requeueOnce: true)
        let controller = Controller(reconciler, workers: 4, logger: quiet)
        let key = ObjectKey(namespace: "default", name: "only")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await controller.run() }
            for _ in 0..<50 { controller.enqueue(key) }
            await waitFor("requeued once") { reconciler.calls.withLock { $0[key, default: 0] >= 2 } }
            group.cancelAll()
        }
        #expect(reconciler.concurrent.withLock { $0.most } == 1, "a single key never runs on two workers")
        #expect(reconciler.calls.withLock { $0[key, default: 0] } <= 3, "50 adds collapse into a few reconciles")
    }

    @Test("cancelling the controller ends run, idle workers included")
    func cancellation() async {
        let controller = Controller(ScriptedReconciler(failuresPerKey: 0), workers: 2, logger: quiet)
        let task = Task { await controller.run() }
        try? await Task.sleep(for: .milliseconds(30))
        task.cancel()
        await task.value
    }
}
