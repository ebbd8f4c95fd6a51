public import ClusterAPI
public import Logging

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

/// How one reconcile ended, for metrics.
public enum ReconcileOutcome: String, Sendable {
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
public struct Controller<R: Reconciler>: RunnableController {
    public let reconciler: R
    public let queue: WorkQueue<ObjectKey>
    private let workers: Int
    private let logger: Logger
    private let observe: (@Sendable (_ controller: String, _ outcome: Outcome) -> Void)?

    public typealias Outcome = ReconcileOutcome

    public init(_ reconciler: R, workers: Int = 1, queue: WorkQueue<ObjectKey> = WorkQueue(), logger: Logger = Logger(label: "vmsync.controller"),
                observe: (@Sendable (_ controller: String, _ outcome: Outcome) -> Void)? = nil)
    {
        self.reconciler = reconciler
        self.queue = queue
        self.workers = max(1, workers)
        self.logger = logger
        self.observe = observe
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
        do {
            switch try await reconciler.reconcile(key) {
            case .done:
                queue.forget(key)
                observe?(reconciler.name, .success)
            case .requeue(let delay):
                queue.forget(key)
                queue.add(key, after: delay)
                observe?(reconciler.name, .requeue)
            }
        } catch {
            queue.retry(key)
            observe?(reconciler.name, .error)
            // A conflict means the cache was behind a write (the watch brings the change): expected, not news.
            let conflict = (error as? APIError)?.code == 409
            logger.log(level: conflict ? .debug : .warning, "reconcile failed",
                       metadata: ["controller": "\(reconciler.name)", "key": "\(key)", "error": "\(error)"])
        }
    }
}
