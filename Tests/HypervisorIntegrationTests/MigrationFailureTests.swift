import BedTesting
import Foundation
import Hypervisor
import TestBed
import Testing

extension RealLibvirt {
    /// Aborts and timeouts of real migrations: the source guest keeps running and nothing is left on the destination.
    @Suite(
        "Migration abort and timeouts on real libvirt nodes", .serialized, .enabled(if: canRunTestBed),
        .testBed(nodes: 2))
    struct MigrationFailureTests {
        @Test("abort during the disk copy")
        func abortDuringDiskCopy() async throws {
            try await provoke(name: "abort-disk", sharedDisk: false, bandwidth: 1, timeouts: nil) { job, _ in
                #expect(await waitFor(job) { $0.phase == .disks && ($0.statistics.diskProcessed ?? 0) > 0 })
                await job.abort(reason: "test abort in the disk phase")
            } expect: { error in
                #expect(error.code == .operationAborted)
                #expect(error.message.contains("aborted: test abort in the disk phase"), "\(error)")
            }
        }

        @Test("abort during the memory copy")
        func abortDuringMemoryCopy() async throws {
            try await provoke(name: "abort-memory", sharedDisk: true, bandwidth: 1, timeouts: nil) { job, _ in
                #expect(
                    await waitFor(job) {
                        if case .memory = $0.phase { ($0.statistics.memoryProcessed ?? 0) > 0 } else { false }
                    })
                await job.abort(reason: "test abort in the memory phase")
            } expect: { error in
                #expect(error.code == .operationAborted)
                #expect(error.message.contains("aborted: test abort in the memory phase"), "\(error)")
            }
        }

        @Test("cancelling the task running the job aborts it")
        func cancellationAborts() async throws {
            try await provoke(name: "abort-cancel", sharedDisk: true, bandwidth: 1, timeouts: nil) { job, task in
                #expect(await waitFor(job) { if case .memory = $0.phase { true } else { false } })
                task.cancel()
            } expect: { error in
                #expect(error.code == .operationAborted)
                #expect(error.message.contains("cancelled"), "\(error)")
            }
        }

        @Test("the completion timeout fires (2 s per GiB at 1 MiB/s) and names itself")
        func completionTimeout() async throws {
            let timeouts = MigrationTimeouts(completionPerGiB: .seconds(2), progress: .seconds(60))
            try await provoke(name: "timeout-completion", sharedDisk: true, bandwidth: 1, timeouts: timeouts) { _, _ in
            } expect: { error in
                #expect(error.code == .timeout)
                #expect(error.message.contains("completion timeout of 2 s exceeded"), "\(error)")
            }
        }

        @Test("the progress timeout fires when the link to the destination is cut, and names itself")
        func progressTimeout() async throws {
            let bed = try currentBed()
            let timeouts = MigrationTimeouts(completionPerGiB: .seconds(600), progress: .seconds(2))
            do {
                try await provoke(name: "timeout-progress", sharedDisk: true, bandwidth: 2, timeouts: timeouts) {
                    job, _ in
                    #expect(await waitFor(job) { ($0.statistics.memoryProcessed ?? 0) > 0 })
                    try await bed.setLink(of: "b", up: false)
                } expect: { error in
                    #expect(error.code == .timeout)
                    #expect(error.message.contains("no progress within the progress timeout of 2 s"), "\(error)")
                }
            } catch {
                try await bed.setLink(of: "b", up: true)
                throw error
            }
            try await bed.setLink(of: "b", up: true)
        }

        // MARK: Helpers

        /// Starts the guest on A, starts its migration to B, runs `act`, and checks the job fails as `expect` says while
        /// the guest keeps running on A, with no domain left on B.
        private func provoke(
            name: String, sharedDisk: Bool, bandwidth: UInt64, timeouts: MigrationTimeouts?,
            act: (MigrationJob, Task<MigrationResult, any Error>) async throws -> Void,
            expect: (HypervisorError) -> Void
        ) async throws {
            let bed = try currentBed()
            let (a, b) = (bed.node("a"), bed.node("b"))
            let guest = try await RunningGuest.start(
                name, on: a, bed: bed, diskDirectory: sharedDisk ? bed.report.sharedDirectory : nil)
            let heartbeat = HeartbeatMonitor(paths: [guest.serialPath])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3))
            if !sharedDisk { try await GuestDisk.createBlank(at: b.imagesDirectory + "/\(name).qcow2") }
            let options = MigrationOptions(
                destinationURI: b.uri, destinationXML: try await guest.destinationXML(from: a, to: b),
                storage: sharedDisk ? .none : .full, disks: sharedDisk ? [] : ["vda"], bandwidthMiBPerSecond: bandwidth,
                allowUnsafe: sharedDisk)
            let job = MigrationJob(
                domain: guest.domain, options: options, timeouts: timeouts, pollInterval: .milliseconds(50))
            let started = ContinuousClock.now
            let task = Task { try await job.run() }
            try await act(job, task)
            do {
                _ = try await task.value
                Issue.record("the migration of \(name) succeeded; it should have failed")
            } catch let error as HypervisorError {
                expect(error)
                print("\(name): failed after \(ContinuousClock.now - started) as expected: \(error)")
            }
            // The source keeps running and its heartbeat continues; B has nothing of it.
            #expect(try await guest.domain.state() == .running)
            #expect(await heartbeat.waitForTicks(3), "the guest's heartbeat continues on A")
            let onB = try await Connection.open(b.uri)
            #expect(try await !onB.domainNames().contains(name), "nothing is left on B")
            await onB.close()
            await RunningGuest.remove(name, from: bed)
            await guest.connection.close()
        }

        /// Waits (up to 60 s) for a progress sample satisfying `predicate`.
        private func waitFor(_ job: MigrationJob, _ predicate: @escaping @Sendable (MigrationProgress) -> Bool) async
            -> Bool
        {
            await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    for await sample in job.progress where predicate(sample) { return true }
                    return false
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(60))
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
        }
    }
}
