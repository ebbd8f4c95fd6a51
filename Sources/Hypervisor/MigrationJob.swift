internal import CLibvirt
public import Foundation
import Synchronization

/// A sample of a running migration.
public struct MigrationProgress: Sendable, Hashable {
    /// libvirt's statistics at that moment.
    public var statistics: JobStatistics
    /// Time since the job was started.
    public var elapsed: Duration
    /// Disk mirror or memory iteration.
    public var phase: JobStatistics.Phase { statistics.phase }
}

/// A finished migration.
public struct MigrationResult: Sendable, Hashable {
    /// libvirt's statistics of the completed job (actual downtime, totals), when libvirt still had them.
    public var statistics: JobStatistics?
    /// The last sample taken while the job ran.
    public var lastProgress: JobStatistics?
    /// Wall time from the migrate call to its return.
    public var duration: Duration
}

/// One live migration of one domain: `run()` performs it — the blocking libvirt call on a thread of its own, job
/// statistics polled over a second connection, published on `progress` and fed to the completion and progress
/// timeouts, which abort the job when they fire. `abort(reason:)` or cancelling the task running `run()` aborts it;
/// the source keeps running and the error says why the job ended.
public final class MigrationJob: Sendable {
    /// The migrating domain (on the source connection).
    public let domain: Domain
    /// How it migrates.
    public let options: MigrationOptions
    /// The timeouts, or nil for none.
    public let timeouts: MigrationTimeouts?
    /// How often statistics are sampled.
    public let pollInterval: Duration
    /// Samples while the job runs; finishes when the job ends.
    public let progress: AsyncStream<MigrationProgress>

    private let continuation: AsyncStream<MigrationProgress>.Continuation
    private let sharedMonitor: Connection?
    private let state = Mutex(State())

    private struct State {
        var started = false
        var abortReason: String?
        var abortDelivered = false
        /// The migrate call has returned: cancelling the poller after that is no abort.
        var performed = false
        var verdict: MigrationWatchdog.Verdict?
        var monitor: Domain?
        var last: JobStatistics?
        var callStarted: Date?
        var prepared: Preparation?
    }

    private struct Preparation {
        var connection: Connection
        var monitor: Domain
        var watchdog: MigrationWatchdog?
    }

    /// Prepares a migration of `domain`; nothing happens until `run()`.
    /// `monitorConnection`, if given, is the second connection to the source's libvirtd the job polls and aborts
    /// through (a long-lived one a daemon keeps saves opening one per job); the job does not close it.
    public init(
        domain: Domain, options: MigrationOptions, timeouts: MigrationTimeouts? = .kubeVirtDefaults,
        pollInterval: Duration = .milliseconds(100), monitorConnection: Connection? = nil
    ) {
        self.domain = domain
        self.options = options
        self.timeouts = timeouts
        self.pollInterval = pollInterval
        self.sharedMonitor = monitorConnection
        (progress, continuation) = AsyncStream.makeStream(
            of: MigrationProgress.self, bufferingPolicy: .bufferingNewest(256))
    }

    /// The latest statistics sample.
    public var lastStatistics: JobStatistics? { state.withLock { $0.last } }

    /// When the libvirt migrate call began (nil before).
    public var migrateCallStarted: Date? { state.withLock { $0.callStarted } }

    /// Why the job is being aborted (an abort request, cancellation, or a timeout that fired), nil while it is not.
    /// An abort can take long when a stream is stalled (QEMU waits for in-flight disk writes); whoever owns the
    /// transport may then break it.
    public var abortReason: String? { state.withLock { $0.abortReason } }

    /// Asks for the job to be aborted (delivered as soon as libvirt has a job to abort).
    public func abort(reason: String = "abort requested") async {
        let monitor = state.withLock { state -> Domain? in
            if state.abortReason == nil { state.abortReason = reason }
            return state.monitor
        }
        if let monitor { await deliverAbort(to: monitor) }
    }

    /// Switches to post-copy (needs `options.allowPostCopy`).
    public func startPostCopy() async throws(HypervisorError) {
        guard options.allowPostCopy else {
            throw HypervisorError(
                .operationInvalid, "migration of domain \"\(domain.name)\": post-copy was not allowed for this job")
        }
        try await requireMonitor().startPostCopy()
    }

    /// Changes the bandwidth limit of the running job.
    public func setBandwidth(MiBPerSecond bandwidth: UInt64) async throws(HypervisorError) {
        try await requireMonitor().setMigrationBandwidth(MiBPerSecond: bandwidth)
    }

    /// Changes the tolerated downtime of the running job (with `options.initialDowntime` set, the next memory pass
    /// moves it along the ramp again).
    public func setMaxDowntime(_ downtime: Duration) async throws(HypervisorError) {
        try await requireMonitor().setMaxDowntime(downtime)
    }

    /// Performs the migration; returns the completed statistics, or throws `operationAborted` (abort or
    /// cancellation), `timeout` (naming the timeout that fired) or libvirt's error. Runs once.
    /// `fetchCompletedStatistics` false returns as soon as libvirt's call does, without the completed statistics
    /// (the destination has them: `completedStatistics()` gets them while it is still reachable).
    public func run(fetchCompletedStatistics: Bool = true) async throws(HypervisorError) -> MigrationResult {
        let first = state.withLock { state in
            defer { state.started = true }
            return !state.started
        }
        guard first else {
            throw HypervisorError(.operationInvalid, "migration of domain \"\(domain.name)\" was already run")
        }
        defer { continuation.finish() }
        try options.validate(domain: domain.name)

        let (monitorConnection, monitor, watchdog) = try await preparation()
        do throws(HypervisorError) {
            if let limit = options.downtimeLimit(iteration: 0) { try await monitor.setMaxDowntime(limit) }
            if Task.isCancelled {
                state.withLock { $0.abortReason = $0.abortReason ?? "the migration task was cancelled" }
            }
            if let reason = state.withLock({ $0.abortReason }) {
                throw HypervisorError(
                    .operationAborted, "migration of domain \"\(domain.name)\" aborted before it started: \(reason)")
            }
            state.withLock { $0.monitor = monitor }

            let clock = ContinuousClock()
            let start = clock.now
            let initialWatchdog = watchdog
            let outcome = await withTaskGroup(of: Result<Void, HypervisorError>?.self) { group in
                group.addTask { await self.perform() }
                group.addTask {
                    await self.poll(monitor: monitor, watchdog: initialWatchdog, clock: clock, start: start)
                    // Cancelled from above while the migrate call still runs: the job is aborted (the guest stays on
                    // the source) and the call returns with that.
                    if Task.isCancelled, !self.state.withLock({ $0.performed }) {
                        await self.abort(reason: "the migration task was cancelled")
                    }
                    return nil
                }
                var result: Result<Void, HypervisorError> = .success(())
                for await case let finished? in group {
                    result = finished
                    state.withLock { $0.performed = true }
                    group.cancelAll()
                }
                return result
            }
            let duration = clock.now - start
            state.withLock { $0.monitor = nil }
            let last = lastStatistics
            switch outcome {
            case .success:
                let completed = fetchCompletedStatistics ? await completedStatistics(monitor: monitor) : nil
                await release(monitorConnection)
                return MigrationResult(statistics: completed, lastProgress: last, duration: duration)
            case .failure(let error):
                await release(monitorConnection)
                throw describe(error)
            }
        } catch {
            await release(monitorConnection)
            throw error
        }
    }

    /// Does what `run()` needs before the migrate call — a second connection (job statistics and abort must not
    /// queue behind the migrate call's), the domain on it, the size the timeouts are computed from — so a caller
    /// can do it while it waits for the destination. `run()` does it itself if this was not called; `discard()`
    /// releases it when the job will not run.
    public func prepare() async throws(HypervisorError) {
        _ = try await preparation(keep: true)
    }

    /// Releases what `prepare()` opened, for a job that will not run.
    public func discard() async {
        let prepared = state.withLock { state -> Preparation? in
            defer { state.prepared = nil }
            return state.prepared
        }
        if let prepared { await release(prepared.connection) }
    }

    private func preparation(keep: Bool = false) async throws(HypervisorError) -> (
        Connection, Domain, MigrationWatchdog?
    ) {
        if let prepared = state.withLock({ state -> Preparation? in
            defer { if !keep { state.prepared = nil } }
            return state.prepared
        }) {
            return (prepared.connection, prepared.monitor, prepared.watchdog)
        }
        let connection: Connection
        if let sharedMonitor {
            connection = sharedMonitor
        } else {
            connection = try await Connection.open(domain.connection.uri)
        }
        do throws(HypervisorError) {
            let monitor = try await connection.domain(named: domain.name)
            var watchdog: MigrationWatchdog?
            if let timeouts {
                var bytes = try await monitor.memoryBytes()
                if options.storage != .none {
                    for disk in options.disks { bytes += try await monitor.diskCapacity(disk) }
                }
                watchdog = MigrationWatchdog(bytes: bytes, timeouts: timeouts)
            }
            if keep {
                state.withLock {
                    $0.prepared = Preparation(connection: connection, monitor: monitor, watchdog: watchdog)
                }
            }
            return (connection, monitor, watchdog)
        } catch {
            await release(connection)
            throw error
        }
    }

    /// Closes the monitor connection unless it is the caller's.
    private func release(_ connection: Connection) async {
        if connection !== sharedMonitor { await connection.close() }
    }

    // MARK: Parts

    private func requireMonitor() throws(HypervisorError) -> Domain {
        guard let monitor = state.withLock({ $0.monitor }) else {
            throw HypervisorError(.operationInvalid, "migration of domain \"\(domain.name)\" is not running")
        }
        return monitor
    }

    /// The blocking migrate call, on a thread of its own (it lasts as long as the migration).
    private func perform() async -> Result<Void, HypervisorError> {
        let domain = domain
        let options = options
        state.withLock { $0.callStarted = Date() }
        return await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: Self.migrate(domain, options))
            }
            thread.name = "migrate \(domain.name)"
            thread.start()
        }
    }

    private static func migrate(_ domain: Domain, _ options: MigrationOptions) -> Result<Void, HypervisorError> {
        let operation = "migration of domain \"\(domain.name)\" to \(options.destinationURI)"
        do throws(HypervisorError) {
            let (parameters, count) = try TypedParameters.make(options.parameters, operation: operation)
            defer { virTypedParamsFree(parameters, count) }
            let status = virDomainMigrateToURI3(
                domain.pointer, options.destinationURI, parameters, UInt32(count), options.flags)
            return status == 0 ? .success(()) : .failure(HypervisorError.last(operation))
        } catch {
            return .failure(error)
        }
    }

    private func poll(
        monitor: Domain, watchdog: MigrationWatchdog?, clock: ContinuousClock, start: ContinuousClock.Instant
    ) async {
        var watchdog = watchdog
        var downtimeLimit = options.downtimeLimit(iteration: 0)
        while !Task.isCancelled {
            try? await Task.sleep(for: pollInterval)
            if Task.isCancelled { break }
            if state.withLock({ $0.abortReason != nil && !$0.abortDelivered }) { await deliverAbort(to: monitor) }
            // Fails while libvirt finishes the job on the destination ("domain is not running"): expected.
            guard let statistics = try? await monitor.jobStatistics() else { continue }
            let elapsed = clock.now - start
            state.withLock { $0.last = statistics }
            continuation.yield(MigrationProgress(statistics: statistics, elapsed: elapsed))
            // The downtime limit follows the memory passes (a failed change leaves the previous limit, and the next
            // sample tries again).
            if let iteration = statistics.memoryIteration, let limit = options.downtimeLimit(iteration: iteration),
                limit != downtimeLimit,
                (try? await monitor.setMaxDowntime(limit)) != nil
            {
                downtimeLimit = limit
            }
            if let verdict = watchdog?.observe(statistics, elapsed: elapsed) {
                let first = state.withLock { state -> Bool in
                    guard state.verdict == nil else { return false }
                    state.verdict = verdict
                    return true
                }
                if first { await abort(reason: verdict.description) }
            }
        }
    }

    private func deliverAbort(to monitor: Domain) async {
        // Fails with "no job" before libvirt has started the job; the poll loop tries again.
        if (try? await monitor.abortJob()) != nil {
            state.withLock { $0.abortDelivered = true }
        }
    }

    /// libvirt's statistics of the finished job, from the destination (the source has dropped the domain), with the
    /// disk mirror's totals from the last sample (the destination's copy covers memory only; the mirror had converged
    /// before switchover). Nil when the destination cannot be reached or has none.
    public func completedStatistics() async -> JobStatistics? {
        guard let destination = try? await Connection.open(options.destinationURI) else { return nil }
        var statistics: JobStatistics?
        if let domain = try? await destination.domain(named: domain.name) {
            statistics = try? await domain.jobStatistics(completed: true)
        }
        await destination.close()
        return statistics.map(withDiskTotals)
    }

    /// The finished job's statistics: on the source while it still has the domain, else on the destination.
    private func completedStatistics(monitor: Domain) async -> JobStatistics? {
        if let statistics = try? await monitor.jobStatistics(completed: true) { return withDiskTotals(statistics) }
        return await completedStatistics()
    }

    private func withDiskTotals(_ completed: JobStatistics) -> JobStatistics {
        guard (completed.diskTotal ?? 0) == 0, let last = lastStatistics, (last.diskTotal ?? 0) > 0 else {
            return completed
        }
        var statistics = completed
        statistics.diskTotal = last.diskTotal
        statistics.diskProcessed = last.diskProcessed
        statistics.diskRemaining = last.diskRemaining
        return statistics
    }

    /// The error a failed job ends with: the timeout that fired, the abort and its reason, or libvirt's own.
    private func describe(_ error: HypervisorError) -> HypervisorError {
        let (verdict, reason) = state.withLock { ($0.verdict, $0.abortReason) }
        let subject = "migration of domain \"\(domain.name)\" to \(options.destinationURI)"
        let libvirt =
            error.message.hasPrefix(subject + ": ") ? String(error.message.dropFirst(subject.count + 2)) : error.message
        if let verdict {
            return HypervisorError(
                .timeout, "\(subject) aborted: \(verdict) (libvirt: \(libvirt))", libvirtCode: error.libvirtCode)
        }
        if let reason {
            return HypervisorError(
                .operationAborted, "\(subject) aborted: \(reason) (libvirt: \(libvirt))", libvirtCode: error.libvirtCode
            )
        }
        return error
    }
}
