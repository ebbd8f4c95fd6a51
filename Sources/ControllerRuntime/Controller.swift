public import ClusterAPI
public import Logging
import Metrics

/// What one reconciler says after looking at a key.
public enum ReconcileResult: Sendable, Hashable {
    /// The object is where its spec asks; nothing to come back for.
    case done
    /// Look again after the delay (a timeout to check, a peer to wait for).
    case requeue(after: Duration)
}

/// One concern's level-based reconcile: re-read the object with `key` from the caches, move it toward its spec,
/// write status only when it changed. Throwing means "try again": the key comes back with backoff, and whatever the
/// user should know is a condition on the object, never a terminal phase.
public protocol Reconciler: Sendable {
    /// The name metrics and logs use (`vmsync_reconcile_total{controller=…}`).
    var name: String { get }
    func reconcile(_ key: ObjectKey) async throws -> ReconcileResult
}

/// How one reconcile ended: the `result` label of `vmsync_reconcile_total`.
public enum ReconcileOutcome: String, Sendable, CaseIterable {
    case success, requeue, error
}

/// What a group of controllers needs of each whatever its reconciler: run it, and tell whether it has work.
public protocol RunnableController: Sendable {
    func run() async
    /// Whether its queue holds no key, works on none and has none due soon.
    var isIdle: Bool { get }
}

/// Runs a reconciler over the keys its informers' handlers enqueue: `workers` keys at a time (never one key twice at
/// once), failures retried with backoff, requeues at their delay.
///
/// Metrics (swift-metrics; the executable picks the backend), labelled with the reconciler's `name`:
/// `vmsync_reconcile_total{controller,result}` (result `success`, `requeue` or `error`),
/// `vmsync_reconcile_duration_seconds{controller}` and `vmsync_workqueue_depth{controller}` (keys waiting to be
/// handed out, as client-go's `workqueue_depth`).
public struct Controller<R: Reconciler>: RunnableController {
    public let reconciler: R
    public let queue: WorkQueue<ObjectKey>
    private let workers: Int
    private let logger: Logger
    private let metrics: ReconcileMetrics

    public typealias Outcome = ReconcileOutcome

    /// The metrics are made here, from the metrics factory in force (bootstrapped, or a test's task-local one).
    public init(
        _ reconciler: R, workers: Int = 1, queue: WorkQueue<ObjectKey> = WorkQueue(),
        logger: Logger = Logger(label: "vmsync.controller")
    ) {
        self.reconciler = reconciler
        self.queue = queue
        self.workers = max(1, workers)
        self.logger = logger
        metrics = ReconcileMetrics(controller: reconciler.name)
        queue.reportDepth(to: Gauge(label: "vmsync_workqueue_depth", dimensions: [("controller", reconciler.name)]))
    }

    /// Queues `key` for reconciling.
    public func enqueue(_ key: ObjectKey) { queue.add(key) }

    public var isIdle: Bool { queue.isIdle() }

    /// Reconciles until cancelled; then hands out no more keys and lets running reconciles finish.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await queue.runTimers() }
            for _ in 0..<workers {
                group.addTask {
                    while let key = await queue.next() {
                        await process(key)
                        queue.done(key)
                    }
                }
            }
            await withTaskCancellationHandler {
                await group.next()
            } onCancel: {
                queue.shutDown()
            }
            group.cancelAll()
        }
    }

    /// One reconcile of `key`, with what follows from its outcome.
    public func process(_ key: ObjectKey) async {
        let started = ContinuousClock.now
        do {
            switch try await reconciler.reconcile(key) {
            case .done:
                queue.forget(key)
                metrics.record(.success, since: started)
            case .requeue(let delay):
                queue.forget(key)
                queue.add(key, after: delay)
                metrics.record(.requeue, since: started)
            }
        } catch {
            queue.retry(key)
            metrics.record(.error, since: started)
            // A conflict means the cache was behind a write (the watch brings the change): expected, not news.
            let conflict = (error as? APIError)?.code == 409
            logger.log(
                level: conflict ? .debug : .warning, "reconcile failed",
                metadata: ["controller": "\(reconciler.name)", "key": "\(key)", "error": "\(error)"])
        }
    }
}

/// One controller's reconcile counters (one per outcome, made up front so every series exists from the start) and
/// its reconcile duration.
struct ReconcileMetrics: Sendable {
    private let counters: [ReconcileOutcome: Counter]
    private let duration: Timer

    init(controller: String) {
        counters = Dictionary(
            uniqueKeysWithValues: ReconcileOutcome.allCases.map { outcome in
                (
                    outcome,
                    Counter(
                        label: "vmsync_reconcile_total",
                        dimensions: [("controller", controller), ("result", outcome.rawValue)])
                )
            })
        duration = Timer(label: "vmsync_reconcile_duration_seconds", dimensions: [("controller", controller)])
    }

    func record(_ outcome: ReconcileOutcome, since started: ContinuousClock.Instant) {
        counters[outcome]?.increment()
        duration.record(duration: ContinuousClock.now - started)
    }
}
