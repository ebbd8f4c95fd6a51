import BedTesting
import Foundation
import Hypervisor
import TestBed
import TestSupport
import Testing

extension RealLibvirt {
    /// Live migration of the tiny guest between two real libvirt nodes (QEMU under TCG).
    @Suite("Live migration between real libvirt nodes", .serialized, .enabled(if: canRunTestBed), .testBed(nodes: 2))
    struct LiveMigrationTests {
        @Test(
            "the guest moves from A to B with its disk copied: no tick lost, disk identical and advancing; live, or paused for the memory copy",
            arguments: [MemoryCopy.live, .paused])
        func migrateWithDiskCopy(memoryCopy: MemoryCopy) async throws {
            let bed = try currentBed()
            let (a, b) = (bed.node("a"), bed.node("b"))
            let guest = try await RunningGuest.start("mig-copy", on: a, bed: bed, seed: 11)
            let heartbeat = HeartbeatMonitor(paths: [guest.serialPath, b.imagesDirectory + "/mig-copy.serial"])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(5), "the guest prints its heartbeat on A")

            try await GuestDisk.createBlank(at: b.imagesDirectory + "/mig-copy.qcow2")
            let options = MigrationOptions(
                destinationURI: b.uri, destinationXML: try await guest.destinationXML(from: a, to: b), storage: .full,
                disks: ["vda"], memoryCopy: memoryCopy)
            let job = MigrationJob(domain: guest.domain, options: options, pollInterval: .milliseconds(20))
            let onB = try await Connection.open(b.uri)
            let (eventsOnA, eventsOnB) = (try await guest.connection.lifecycleEvents(), try await onB.lifecycleEvents())
            let collected = Task {
                async let fromA = eventsOnA.reduce(into: [DomainLifecycleEvent]()) { $0.append($1) }
                async let fromB = eventsOnB.reduce(into: [DomainLifecycleEvent]()) { $0.append($1) }
                return await (fromA, fromB)
            }
            let domain = guest.domain
            let phases = Task {
                var seen: [JobStatistics.Phase] = []
                var statesInMemory: Set<DomainState> = []
                var diskSamples: [DomainState] = []
                for await sample in job.progress {
                    if seen.last != sample.phase { seen.append(sample.phase) }
                    // (A sample read just before the handover can meet the source already shut off.)
                    guard let state = try? await domain.state(), state != .shutOff else { continue }
                    if case .memory = sample.phase {
                        statesInMemory.insert(state)
                    } else if sample.phase == .disks {
                        diskSamples.append(state)
                    }
                }
                // The state is read after its sample: the last disk-copy samples may meet the guest already paused
                // for the memory copy that began in between (on a loaded machine more than one; seen with two).
                let sequence = diskSamples
                if !statesInMemory.isEmpty { while diskSamples.last == .paused { diskSamples.removeLast() } }
                return (seen, Set(diskSamples), statesInMemory, sequence)
            }
            let result = try await job.run()
            let (seen, statesInDisks, statesInMemory, diskSequence) = await phases.value
            // The disks are mirrored while the guest runs either way; the memory is copied while it runs or paused.
            #expect(statesInDisks == [.running], "guest states during the disk copy: \(diskSequence)")
            // (A live copy's samples can catch the final pause of the switchover.)
            #expect(
                memoryCopy == .live ? statesInMemory.contains(.running) : statesInMemory == [.paused],
                "guest states during the memory copy: \(statesInMemory)")

            // Heartbeat continues on B; every tick arrived, on one socket or the other.
            #expect(await heartbeat.waitForTick(from: 1), "the heartbeat continues on B")
            #expect(await heartbeat.waitForTicks(10))
            let analysis = heartbeat.analysis()
            #expect(analysis.continuous, "lost ticks or a restart: \(analysis)")
            #expect((analysis.perSource[0] ?? 0) > 0 && (analysis.perSource[1] ?? 0) > 0)
            #expect(analysis.largestGap < 3, "guest-visible gap \(analysis.largestGap) s")
            if memoryCopy == .paused {
                #expect(
                    heartbeat.kernelProblems.isEmpty, "the guest kernel reports damage: \(heartbeat.kernelProblems)")
            }
            print(
                "migrate with disk copy (\(memoryCopy)): \(analysis); kernel problems \(heartbeat.kernelProblems.count); libvirt downtime \(result.statistics?.downtimeMs.map { "\($0) ms" } ?? "?"), wall \(result.duration)"
            )

            // Phases: disk mirror first, then memory iterations.
            let firstDisk = seen.firstIndex(of: .disks)
            let firstMemory = seen.firstIndex { if case .memory = $0 { true } else { false } }
            #expect(firstDisk != nil && firstMemory != nil && firstDisk! < firstMemory!, "phases seen: \(seen)")
            #expect(result.statistics?.kind == .completed)
            #expect((result.statistics?.diskTotal ?? 0) > 0, "the completed statistics count the copied disk")

            // The domain lives on B only, and runs there.
            #expect(try await onB.domain(named: "mig-copy").state() == .running)
            #expect(try await !guest.connection.domainNames().contains("mig-copy"), "UNDEFINE_SOURCE removed it from A")

            // B's disk: the static region byte-identical, the tick sector advancing past the switchover.
            let switchover = analysis.last ?? 0
            let first = try await GuestDisk.contents(of: b.imagesDirectory + "/mig-copy.qcow2")
            #expect(first.prefix(GuestDisk.staticRegion) == GuestDisk.pattern(seed: 11), "static region copied exactly")
            let tickAfter = try #require(GuestDisk.lastTick(in: first))
            #expect(await heartbeat.waitForTicks(5))
            let later = try await GuestDisk.contents(of: b.imagesDirectory + "/mig-copy.qcow2")
            #expect(
                try #require(GuestDisk.lastTick(in: later)) > tickAfter,
                "the guest keeps writing ticks to its disk on B")
            #expect(tickAfter >= switchover - 5)
            await onB.close()
            await guest.connection.close()

            // libvirt's events, delivered through the event-loop thread: A stopped because it migrated, B started
            // and resumed because it did.
            let (fromA, fromB) = await collected.value
            #expect(
                fromA.contains { $0.kind == .stopped && $0.isMigration && $0.domain == "mig-copy" },
                "events on A: \(fromA)")
            #expect(fromB.contains { $0.kind == .started && $0.isMigration }, "events on B: \(fromB)")
            #expect(fromB.contains { $0.kind == .resumed && $0.isMigration }, "events on B: \(fromB)")
            await RunningGuest.remove("mig-copy", from: bed)
        }
    }
}

extension RealLibvirt.LiveMigrationTests {
    @Test("memory and disks over unix:// URIs, with max downtime, auto-converge and a switch to post-copy")
    func unixStreamsAndPostCopy() async throws {
        let bed = try currentBed()
        let (a, b) = (bed.node("a"), bed.node("b"))
        let guest = try await RunningGuest.start("mig-postcopy", on: a, bed: bed, seed: 5)
        let heartbeat = HeartbeatMonitor(paths: [guest.serialPath, b.imagesDirectory + "/mig-postcopy.serial"])
        defer { heartbeat.stop() }
        #expect(await heartbeat.waitForTicks(5))
        try await GuestDisk.createBlank(at: b.imagesDirectory + "/mig-postcopy.qcow2")
        // Both nodes see the bed's shared directory, so unix sockets there connect the two QEMUs directly — the
        // shape the agents' tunnels will have (a local socket on each side).
        let sockets = bed.report.sharedDirectory
        let options = MigrationOptions(
            destinationURI: b.uri, migrationURI: "unix://\(sockets)/postcopy-memory.sock",
            disksURI: "unix://\(sockets)/postcopy-disks.sock",
            destinationXML: try await guest.destinationXML(from: a, to: b), storage: .full, disks: ["vda"],
            bandwidthMiBPerSecond: 16, maxDowntime: .milliseconds(150), initialDowntime: .milliseconds(40),
            autoConverge: true, allowPostCopy: true)
        let job = MigrationJob(domain: guest.domain, options: options, pollInterval: .milliseconds(50))
        let switched = Task {
            for await sample in job.progress {
                if case .memory = sample.phase, (sample.statistics.memoryProcessed ?? 0) > 4 << 20 {
                    // The first passes run with the initial downtime limit, not the maximum (nor QEMU's 300 ms).
                    let limit = try await TestSupport.run(
                        "/usr/bin/virsh", ["-c", a.uri, "migrate-getmaxdowntime", "mig-postcopy"])
                    #expect(
                        limit.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "40",
                        "\(limit.stdout)\(limit.stderr)")
                    try await job.setBandwidth(MiBPerSecond: 64)
                    try await job.startPostCopy()
                    return true
                }
            }
            return false
        }
        let result = try await job.run()
        #expect(try await switched.value, "the job switched to post-copy during the memory phase")
        #expect(await heartbeat.waitForTick(from: 1))
        #expect(await heartbeat.waitForTicks(5))
        let analysis = heartbeat.analysis()
        #expect(analysis.continuous, "lost ticks or a restart: \(analysis)")
        print("unix streams + post-copy: \(analysis); wall \(result.duration)")
        let onB = try await Connection.open(b.uri)
        #expect(try await onB.domain(named: "mig-postcopy").state() == .running)
        let contents = try await GuestDisk.contents(of: b.imagesDirectory + "/mig-postcopy.qcow2")
        #expect(contents.prefix(GuestDisk.staticRegion) == GuestDisk.pattern(seed: 5))
        await onB.close()
        await guest.connection.close()
        await RunningGuest.remove("mig-postcopy", from: bed)
    }

    @Test("post-copy is refused for a job that did not allow it")
    func postCopyNotAllowed() async throws {
        let bed = try currentBed()
        let connection = try await Connection.open(bed.node("a").uri)
        let spec = DomainSpec(name: "pc-refused", memoryMiB: 64, boot: .init(kernel: bed.report.guest.kernel))
        let domain = try await connection.define(spec)
        let job = MigrationJob(domain: domain, options: MigrationOptions(destinationURI: bed.node("b").uri))
        let error = await #expect(throws: HypervisorError.self) { try await job.startPostCopy() }
        #expect(error?.message.contains("post-copy was not allowed") == true)
        try await domain.undefine()
        await connection.close()
    }
}
