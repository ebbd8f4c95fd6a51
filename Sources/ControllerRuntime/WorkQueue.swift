public import Metrics
import Synchronization

/// Keys of objects to reconcile, as client-go's rate-limited work queue hands them out: a key waiting is not added
/// twice; a key being processed is not handed to a second worker (added meanwhile, it comes back once its worker is
/// done); a key that failed comes back after a per-key exponential backoff; and every retry also waits for a token of
/// an overall rate limit, so a cluster-wide failure cannot turn into a busy loop.
public final class WorkQueue<Key: Hashable & Sendable>: Sendable {
    /// Per-key backoff: `base` doubled per consecutive failure, at most `maximum`.
    public struct Backoff: Sendable {
        public var base: Duration
        public var maximum: Duration

        public init(base: Duration = .milliseconds(5), maximum: Duration = .seconds(300)) {
            self.base = base
            self.maximum = maximum
        }

        /// The wait before the next try after `failures` failures in a row.
        public func delay(failures: Int) -> Duration {
            guard failures > 0 else { return .zero }
            let factor = Double(1 << min(failures - 1, 40))
            return .milliseconds(Int64(min(min(base.seconds, 1e9) * factor, maximum.seconds) * 1000))
        }
    }

    /// The overall limit on retries: `perSecond` tokens a second, up to `burst` saved.
    public struct RateLimit: Sendable {
        public var perSecond: Double
        public var burst: Int

        public init(perSecond: Double = 10, burst: Int = 100) {
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    private struct State {
        var queue: [Key] = []
        var head = 0
        var dirty: Set<Key> = []
        var processing: Set<Key> = []
        var failures: [Key: Int] = [:]
        var waiters: [(id: Int, continuation: CheckedContinuation<Key?, Never>)] = []
        var nextWaiter = 0
        var shuttingDown = false
        var tokens: Double
        var tokensAt = ContinuousClock.now
        var timers: [Key: ContinuousClock.Instant] = [:]
        /// Where the number of waiting keys goes whenever it changes (`reportDepth`).
        var depthGauge: Gauge?

        /// Keys waiting to be handed out.
        var depth: Int { queue.count - head }

        /// Queues `key` unless it waits already; a waiting worker gets it at once (returned to resume outside the lock).
        mutating func add(_ key: Key) -> (CheckedContinuation<Key?, Never>, Key)? {
            guard !shuttingDown, !dirty.contains(key) else { return nil }
            dirty.insert(key)
            guard !processing.contains(key) else { return nil }  // comes back when its worker is done
            if !waiters.isEmpty {
                let waiter = waiters.removeFirst()
                dirty.remove(key)
                processing.insert(key)
                return (waiter.continuation, key)
            }
            queue.append(key)
            depthGauge?.record(depth)
            return nil
        }

        mutating func take() -> Key? {
            guard head < queue.count else { return nil }
            let key = queue[head]
            head += 1
            if head > 1024 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            dirty.remove(key)
            processing.insert(key)
            depthGauge?.record(depth)
            return key
        }
    }

    private let backoff: Backoff
    private let rateLimit: RateLimit
    private let state: Mutex<State>

    public init(backoff: Backoff = Backoff(), rateLimit: RateLimit = RateLimit()) {
        self.backoff = backoff
        self.rateLimit = rateLimit
        self.state = Mutex(State(tokens: Double(rateLimit.burst)))
    }

    /// Keys waiting to be handed out.
    public var depth: Int { state.withLock { $0.depth } }

    /// Records the number of waiting keys in `gauge` now and whenever it changes (recorded under the queue's lock, so
    /// the last value recorded is the current one).
    public func reportDepth(to gauge: Gauge) {
        state.withLock { state in
            state.depthGauge = gauge
            gauge.record(state.depth)
        }
    }

    /// Whether no key waits, none is being worked on and none is due within `horizon` (a retry after a failure is
    /// due soon; a requeue for a timeout minutes away is not work in flight).
    public func isIdle(horizon: Duration = .milliseconds(500)) -> Bool {
        let limit = ContinuousClock.now + horizon
        return state.withLock { state in
            state.queue.count == state.head && state.processing.isEmpty && !state.timers.values.contains { $0 <= limit }
        }
    }

    /// Keys waiting for their delay.
    public var delayed: Int { state.withLock { $0.timers.count } }

    /// How often `key` failed in a row.
    public func failureCount(_ key: Key) -> Int { state.withLock { $0.failures[key, default: 0] } }

    /// Queues `key` unless it is already waiting.
    public func add(_ key: Key) {
        if let (waiter, key) = state.withLock({ $0.add(key) }) { waiter.resume(returning: key) }
    }

    /// Queues `key` after `delay` (an earlier pending add of the same key wins). Delayed keys are queued by
    /// `runTimers`, which the queue's owner runs as a child task.
    public func add(_ key: Key, after delay: Duration) {
        guard delay > .zero else { return add(key) }
        let due = ContinuousClock.now + delay
        state.withLock { state in
            if let pending = state.timers[key], pending <= due { return }
            state.timers[key] = due
        }
    }

    /// Queues delayed keys when they are due, until cancelled or shut down. A delay is kept to within `granularity`
    /// (a new earlier timer is seen at the next wake-up).
    public func runTimers(granularity: Duration = .milliseconds(20)) async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let (due, earliest, stop) = state.withLock { state -> ([Key], ContinuousClock.Instant?, Bool) in
                let due = state.timers.filter { $0.value <= now }.map(\.key)
                for key in due { state.timers[key] = nil }
                return (due, state.timers.values.min(), state.shuttingDown)
            }
            if stop { return }
            for key in due { add(key) }
            try? await Task.sleep(until: min(earliest ?? now + granularity, now + granularity), clock: .continuous)
        }
    }

    /// Queues `key` again after its backoff and a token of the rate limit: what a worker does when reconciling failed.
    public func retry(_ key: Key) {
        let delay = state.withLock { state -> Duration in
            state.failures[key, default: 0] += 1
            let perKey = backoff.delay(failures: state.failures[key, default: 0])
            // A token of the overall limit (the wait until one is free).
            let now = ContinuousClock.now
            let elapsed = state.tokensAt.duration(to: now)
            state.tokensAt = now
            state.tokens = min(Double(rateLimit.burst), state.tokens + elapsed.seconds * rateLimit.perSecond)
            state.tokens -= 1
            let limited: Duration =
                state.tokens < 0 ? .milliseconds(Int64(-state.tokens / rateLimit.perSecond * 1000)) : .zero
            return max(perKey, limited)
        }
        add(key, after: delay)
    }

    /// Forgets `key`'s failures: what a worker does when reconciling succeeded.
    public func forget(_ key: Key) {
        state.withLock { _ = $0.failures.removeValue(forKey: key) }
    }

    /// The next key to work on, waiting for one; nil once the queue shut down or the task is cancelled. The caller
    /// must call `done` with it.
    public func next() async -> Key? {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Key?, Never>) in
                // (give now, what) or wait for an add.
                let (now, key) = state.withLock { state -> (Bool, Key?) in
                    if let key = state.take() { return (true, key) }
                    if state.shuttingDown || Task.isCancelled { return (true, nil) }
                    state.waiters.append((id, continuation))
                    return (false, nil)
                }
                if now { continuation.resume(returning: key) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Key?, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(returning: nil)
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    public func done(_ key: Key) {
        let again = state.withLock { state -> Bool in
            state.processing.remove(key)
            return state.dirty.remove(key) != nil
        }
        if again { add(key) }
    }

    /// Hands out nothing more: waiting workers get nil.
    public func shutDown() {
        let waiters = state.withLock { state -> [CheckedContinuation<Key?, Never>] in
            state.shuttingDown = true
            defer { state.waiters.removeAll() }
            return state.waiters.map(\.continuation)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
