import ArgumentParser
import Foundation
import Hypervisor
import TestBed

#if canImport(Glibc)
import Glibc
#endif

extension TestBedCommand {
    /// The local demo, as far as the landed work reaches: two libvirt nodes, the tiny guest on the first, live-migrated
    /// with its disk to the second and back through vmsync's Hypervisor, its heartbeat shown throughout.
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Two local nodes; the tiny guest live-migrated a → b → a with its disk, heartbeat shown.")
        @OptionGroup var cache: CacheOption

        func validate() throws {
            guard getuid() == 0 else { throw ValidationError("the demo needs root (network and mount namespaces)") }
        }

        func run() async throws {
            try Reaper.shared.start()
            Bed.removeStale()
            let directory = NSTemporaryDirectory() + "vmsync-testbed-\(getpid())"
            let bed = Bed(directory: directory, cacheDirectory: cache.cache)
            defer {
                bed.down()
                try? FileManager.default.removeItem(atPath: directory)
                print("demo: bed torn down")
            }
            print("demo: building the tiny guest (cached in \(cache.cache)/guest)")
            let guest = try GuestBuilder(cacheDirectory: cache.cache + "/guest").build()
            print("demo: starting nodes a and b (libvirtd each in its own network and mount namespace)")
            try bed.up(count: 2)
            let (a, b) = (bed.nodes[0], bed.nodes[1])
            for node in bed.nodes { print("  node \(node.name): \(node.address)  \(node.uri)") }

            let name = "demo-guest"
            let disk = a.imagesDirectory + "/\(name).qcow2"
            try await GuestDisk.create(at: disk, seed: 42)
            let spec = DomainSpec(
                name: name, memoryMiB: 128, tcgCacheMiB: 32,
                boot: .init(kernel: guest.kernel, initrd: guest.initrd, commandLine: GuestFiles.commandLine),
                disks: [.init(path: disk, target: "vda")], serialSocket: a.imagesDirectory + "/\(name).serial")
            let onA = try await Connection.open(a.uri)
            try await onA.define(spec).start()
            await onA.close()
            print("demo: guest \(name) started on node a; waiting for its heartbeat")
            let boot = HeartbeatMonitor(paths: [spec.serialSocket!])
            guard await boot.waitForTicks(5, timeout: 60) else { throw LaunchError("the guest printed no heartbeat") }
            boot.stop()

            for (source, target) in [(a, b), (b, a)] {
                try await migrate(name, from: source, to: target)
            }
            print("demo: done — the guest went a → b → a live, disk copied each way, no heartbeat tick lost")
        }

        private func migrate(_ name: String, from source: TestBedNode, to target: TestBedNode) async throws {
            try await GuestDisk.createBlank(at: target.imagesDirectory + "/\(name).qcow2")
            let heartbeat = HeartbeatMonitor(paths: [source.imagesDirectory + "/\(name).serial", target.imagesDirectory + "/\(name).serial"])
            defer { heartbeat.stop() }
            _ = await heartbeat.waitForTicks(3)
            let connection = try await Connection.open(source.uri)
            let domain = try await connection.domain(named: name)
            let xml = try await domain.xml(migratable: true).replacingOccurrences(of: source.imagesDirectory, with: target.imagesDirectory)
            let options = MigrationOptions(destinationURI: target.uri, destinationXML: xml, storage: .full, disks: ["vda"])
            let job = MigrationJob(domain: domain, options: options, pollInterval: .milliseconds(50))
            print("demo: migrating \(name) \(source.name) → \(target.name) (live, disk copied)")
            let reporter = Task {
                var last: JobStatistics.Phase?
                for await sample in job.progress where sample.phase != last {
                    last = sample.phase
                    switch sample.phase {
                    case .setup: print("  setup: destination QEMU starting")
                    case .disks: print("  disk mirror: \(sample.statistics.diskTotal.map { "\($0 >> 20) MiB" } ?? "?")")
                    case .memory(let iteration):
                        print("  memory iteration \(iteration): \((sample.statistics.memoryRemaining ?? 0) >> 20) MiB remaining")
                    }
                }
            }
            let result = try await job.run()
            await reporter.value
            await connection.close()
            _ = await heartbeat.waitForTick(from: 1)
            _ = await heartbeat.waitForTicks(3)
            let analysis = heartbeat.analysis()
            let seconds = Double(result.duration.components.seconds) + Double(result.duration.components.attoseconds) / 1e18
            print(String(format: "  done in %.2f s; libvirt downtime %@ ms; heartbeat: %@", seconds,
                         result.statistics?.downtimeMs.map(String.init) ?? "?", analysis.description))
            if !analysis.lost.isEmpty { throw LaunchError("ticks lost: \(analysis.lost)") }
        }
    }
}
