public import Foundation

/// Keys of objects to reconcile, as client-go's rate-limited work queue hands them out: a key waiting is not added
/// twice; a key being processed is not handed to a second worker (added meanwhile, it comes back once its worker is
/// done); a key that failed comes back after a per-key exponential backoff; and every retry also waits for a token of
/// an overall rate limit, so a cluster-wide failure cannot turn into a busy loop.
public actor WorkQueue<Key: Hashable & Sendable> {
    /// Per-key backoff: `base` doubled per consecutive failure, at most `maximum`.
    public struct Backoff: Sendable {
        public var base: Duration
        public var maximum: Duration

        public init(base: Duration = .milliseconds(5), maximum: Duration = .seconds(300)) {
            self.base = base
            self.maximum = maximum
        }

        func delay(failures: Int) -> Duration {
            guard failures > 0 else { return .zero }
            let factor = Double(1 << min(failures - 1, 40))
            let seconds = min(Double(base.components.seconds) + Double(base.components.attoseconds) / 1e18, 1e9) * factor
            let maximumSeconds = Double(maximum.components.seconds) + Double(maximum.components.attoseconds) / 1e18
            return .milliseconds(Int64(min(seconds, maximumSeconds) * 1000))
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

    private let backoff: Backoff
    private let rateLimit: RateLimit
    private var queue: [Key] = []
    private var head = 0
    private var dirty: Set<Key> = []
    private var processing: Set<Key> = []
    private var failures: [Key: Int] = [:]
    private var waiters: [CheckedContinuation<Key?, Never>] = []
    private var shuttingDown = false
    private var tokens: Double
    private var tokensAt = ContinuousClock.now
    private var timers: [Key: ContinuousClock.Instant] = [:]

    public init(backoff: Backoff = Backoff(), rateLimit: RateLimit = RateLimit()) {
        self.backoff = backoff
        self.rateLimit = rateLimit
        self.tokens = Double(rateLimit.burst)
    }

    /// Keys waiting to be handed out.
    public var depth: Int { queue.count - head }

    /// How often `key` failed in a row.
    public func failureCount(_ key: Key) -> Int { failures[key, default: 0] }

    /// Queues `key` unless it is already waiting.
    public func add(_ key: Key) {
        guard !shuttingDown, !dirty.contains(key) else { return }
        dirty.insert(key)
        guard !processing.contains(key) else { return }  // comes back when its worker is done
        if let waiter = waiters.first {
            waiters.removeFirst()
            dirty.remove(key)
            processing.insert(key)
            waiter.resume(returning: key)
            return
        }
        queue.append(key)
    }

    /// Queues `key` after `delay` (an earlier pending add of the same key wins). Delayed keys are queued by
    /// `runTimers`, which the queue's owner runs as a child task.
    public func add(_ key: Key, after delay: Duration) {
        guard delay > .zero else { return add(key) }
        let due = ContinuousClock.now + delay
        if let pending = timers[key], pending <= due { return }
        timers[key] = due
    }

    /// Keys waiting for their delay.
    public var delayed: Int { timers.count }

    /// Queues delayed keys when they are due, until cancelled. A delay is kept to within `granularity` (a new
    /// earlier timer is seen at the next wake-up).
    public func runTimers(granularity: Duration = .milliseconds(20)) async {
        while !Task.isCancelled && !shuttingDown {
            let now = ContinuousClock.now
            for (key, due) in timers where due <= now {
                timers[key] = nil
                add(key)
            }
            let earliest = timers.values.min() ?? now + granularity
            try? await Task.sleep(until: min(earliest, now + granularity), clock: .continuous)
        }
    }

    /// Queues `key` again after its backoff and a token of the rate limit: what a worker does when reconciling failed.
    public func retry(_ key: Key) {
        failures[key, default: 0] += 1
        let perKey = backoff.delay(failures: failures[key, default: 0])
        add(key, after: max(perKey, takeToken()))
    }

    /// Forgets `key`'s failures: what a worker does when reconciling succeeded.
    public func forget(_ key: Key) {
        failures[key] = nil
    }

    /// The delay until a token is free (zero when one is), taking it.
    private func takeToken() -> Duration {
        let now = ContinuousClock.now
        let elapsed = tokensAt.duration(to: now)
        tokensAt = now
        tokens = min(Double(rateLimit.burst), tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rateLimit.perSecond)
        tokens -= 1
        guard tokens < 0 else { return .zero }
        return .milliseconds(Int64(-tokens / rateLimit.perSecond * 1000))
    }

    /// The next key to work on, waiting for one; nil once the queue shut down. The caller must call `done` with it.
    public func next() async -> Key? {
        if head < queue.count {
            let key = queue[head]
            head += 1
            if head > 1024 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            dirty.remove(key)
            processing.insert(key)
            return key
        }
        if shuttingDown { return nil }
        return await withCheckedContinuation { waiters.append($0) }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    public func done(_ key: Key) {
        processing.remove(key)
        if dirty.contains(key) {
            dirty.remove(key)
            add(key)
        }
    }

    /// Hands out nothing more: waiting workers get nil.
    public func shutDown() {
        shuttingDown = true
        for waiter in waiters { waiter.resume(returning: nil) }
        waiters.removeAll()
    }
}
