import Foundation
import Hypervisor
import TestBed
import Testing

extension RealLibvirt {
    /// Live migration of the tiny guest between two real libvirt nodes (QEMU under TCG).
    @Suite("Live migration between real libvirt nodes", .serialized, .enabled(if: canRunTestBed), .testBed(nodes: 2))
    struct LiveMigrationTests {
        @Test("the guest moves from A to B with its disk copied: no tick lost, disk identical and advancing")
        func migrateWithDiskCopy() async throws {
            let bed = try currentBed()
            let (a, b) = (bed.node("a"), bed.node("b"))
            let guest = try await RunningGuest.start("mig-copy", on: a, bed: bed, seed: 11)
            defer { Task { await RunningGuest.remove("mig-copy", from: bed) } }
            let heartbeat = HeartbeatMonitor(paths: [guest.serialPath, b.imagesDirectory + "/mig-copy.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(5), "the guest prints its heartbeat on A")

            try await GuestDisk.createBlank(at: b.imagesDirectory + "/mig-copy.qcow2")
            let options = MigrationOptions(
                destinationURI: b.uri, destinationXML: try await guest.destinationXML(from: a, to: b), storage: .full,
                disks: ["vda"])
            let job = MigrationJob(domain: guest.domain, options: options, pollInterval: .milliseconds(20))
            let phases = Task {
                var seen: [JobStatistics.Phase] = []
                for await sample in job.progress where seen.last != sample.phase { seen.append(sample.phase) }
                return seen
            }
            let result = try await job.run()
            let seen = await phases.value

            // Heartbeat continues on B; every tick arrived, on one socket or the other.
            #expect(await heartbeat.waitForTick(from: 1), "the heartbeat continues on B")
            #expect(await heartbeat.waitForTicks(10))
            let analysis = heartbeat.analysis()
            #expect(analysis.lost.isEmpty, "lost ticks: \(analysis.lost)")
            #expect((analysis.perSource[0] ?? 0) > 0 && (analysis.perSource[1] ?? 0) > 0)
            #expect(analysis.largestGap < 3, "guest-visible gap \(analysis.largestGap) s")
            print("migrate with disk copy: \(analysis); libvirt downtime \(result.statistics?.downtimeMs.map { "\($0) ms" } ?? "?"), wall \(result.duration)")

            // Phases: disk mirror first, then memory iterations.
            let firstDisk = seen.firstIndex(of: .disks)
            let firstMemory = seen.firstIndex { if case .memory = $0 { true } else { false } }
            #expect(firstDisk != nil && firstMemory != nil && firstDisk! < firstMemory!, "phases seen: \(seen)")
            #expect(result.statistics?.kind == .completed)
            #expect((result.statistics?.diskTotal ?? 0) > 0, "the completed statistics count the copied disk")

            // The domain lives on B only, and runs there.
            let onB = try await Connection.open(b.uri)
            #expect(try await onB.domain(named: "mig-copy").state() == .running)
            #expect(try await !guest.connection.domainNames().contains("mig-copy"), "UNDEFINE_SOURCE removed it from A")

            // B's disk: the static region byte-identical, the tick sector advancing past the switchover.
            let switchover = analysis.last ?? 0
            let first = try await GuestDisk.contents(of: b.imagesDirectory + "/mig-copy.qcow2")
            #expect(first.prefix(GuestDisk.staticRegion) == GuestDisk.pattern(seed: 11), "static region copied exactly")
            let tickAfter = try #require(GuestDisk.lastTick(in: first))
            #expect(await heartbeat.waitForTicks(5))
            let later = try await GuestDisk.contents(of: b.imagesDirectory + "/mig-copy.qcow2")
            #expect(try #require(GuestDisk.lastTick(in: later)) > tickAfter, "the guest keeps writing ticks to its disk on B")
            #expect(tickAfter >= switchover - 5)
            await onB.close()
            await guest.connection.close()
        }
    }
}
