import Foundation
import Hypervisor
import TestBed
import TestSupport

/// vmsync's Hypervisor migration against `virsh migrate --live --p2p --copy-storage-all` of the same guest between
/// the same two test-bed nodes, alternating (ABBA, so both methods move in both directions equally often).
enum MigrationBenchmark {
    struct Sample {
        var method: String
        var wall: Double
        var gap: Double
        var libvirtDowntimeMs: UInt64?
    }

    static func run(rounds: Int) async throws {
        print("migration: starting a 2-node test bed")
        let bed = try await TestBed.start(nodes: 2)
        do {
            try await measure(bed: bed, rounds: rounds)
        } catch {
            await bed.stop()
            throw error
        }
        await bed.stop()
    }

    private static func measure(bed: TestBed, rounds: Int) async throws {
        let nodes = [bed.node("a"), bed.node("b")]
        let name = "bench-guest"
        let connection = try await Connection.open(nodes[0].uri)
        let disk = nodes[0].imagesDirectory + "/\(name).qcow2"
        try await GuestDisk.create(at: disk, seed: 3)
        let spec = DomainSpec(
            name: name, memoryMiB: 128, tcgCacheMiB: 32,
            boot: .init(
                kernel: bed.report.guest.kernel, initrd: bed.report.guest.initrd, commandLine: GuestFiles.commandLine),
            disks: [.init(path: disk, target: "vda")], serialSocket: nodes[0].imagesDirectory + "/\(name).serial")
        try await connection.define(spec).start()
        await connection.close()
        let boot = HeartbeatMonitor(paths: [spec.serialSocket!])
        guard await boot.waitForTicks(10, timeout: 60) else { throw TestBedError("the guest did not boot") }
        boot.stop()

        // ABBA: vmsync, virsh, virsh, vmsync, … ; the guest moves to the other node every time.
        var samples: [Sample] = []
        var here = 0
        for index in 0..<(rounds * 2) {
            let method = [0, 3].contains(index % 4) ? "vmsync" : "virsh"
            let (source, target) = (nodes[here], nodes[1 - here])
            try await GuestDisk.createBlank(at: target.imagesDirectory + "/\(name).qcow2")
            let heartbeat = HeartbeatMonitor(paths: [
                source.imagesDirectory + "/\(name).serial", target.imagesDirectory + "/\(name).serial",
            ])
            guard await heartbeat.waitForTicks(5) else { throw TestBedError("no heartbeat before migration \(index)") }
            let sourceConnection = try await Connection.open(source.uri)
            let domain = try await sourceConnection.domain(named: name)
            let xml = try await domain.xml(migratable: true).replacingOccurrences(
                of: source.imagesDirectory, with: target.imagesDirectory)
            var sample = Sample(method: method, wall: 0, gap: 0)
            let clock = ContinuousClock()
            if method == "vmsync" {
                let options = MigrationOptions(
                    destinationURI: target.uri, destinationXML: xml, storage: .full, disks: ["vda"])
                let started = clock.now
                let result = try await MigrationJob(domain: domain, options: options).run()
                sample.wall = seconds(clock.now - started)
                sample.libvirtDowntimeMs = result.statistics?.downtimeMs
            } else {
                let xmlPath = bed.report.directory + "/bench-destination.xml"
                try xml.write(toFile: xmlPath, atomically: true, encoding: .utf8)
                let started = clock.now
                let result = try await TestSupport.run(
                    "/usr/bin/virsh",
                    [
                        "-c", source.uri, "migrate", "--live", "--p2p", "--copy-storage-all", "--persistent",
                        "--undefinesource",
                        "--xml", xmlPath, name, target.uri,
                    ], timeout: 300)
                sample.wall = seconds(clock.now - started)
                guard result.status == 0 else { throw TestBedError("virsh migrate failed: \(result.stderr)") }
            }
            await sourceConnection.close()
            guard await heartbeat.waitForTick(from: 1), await heartbeat.waitForTicks(5) else {
                throw TestBedError("no heartbeat after migration \(index)")
            }
            let analysis = heartbeat.analysis()
            heartbeat.stop()
            guard analysis.continuous else {
                throw TestBedError("migration \(index): the guest did not run on: \(analysis)")
            }
            sample.gap = analysis.largestGap
            samples.append(sample)
            print(
                String(
                    format: "  %2d %-6@ %@→%@  wall %.3f s  guest-visible gap %.3f s%@", index + 1, method as NSString,
                    source.name as NSString, target.name as NSString, sample.wall, sample.gap,
                    (sample.libvirtDowntimeMs.map { "  libvirt downtime \($0) ms" } ?? "") as NSString))
            here = 1 - here
        }
        await RemoveGuest.run(name, bed: bed)

        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.count % 2 == 1
                ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        let ours = samples.filter { $0.method == "vmsync" }
        let theirs = samples.filter { $0.method == "virsh" }
        let wallRatio = median(ours.map(\.wall)) / median(theirs.map(\.wall))
        let gapRatio = median(ours.map(\.gap)) / median(theirs.map(\.gap))
        print(
            String(
                format: "migration: median wall vmsync %.3f s, virsh %.3f s → ratio %.3f (goal ≤ 1.05)",
                median(ours.map(\.wall)), median(theirs.map(\.wall)), wallRatio))
        print(
            String(
                format: "migration: median guest-visible gap vmsync %.3f s, virsh %.3f s → ratio %.3f (goal ≤ 1.05)",
                median(ours.map(\.gap)), median(theirs.map(\.gap)), gapRatio))
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// Removes the benchmark guest from every node.
enum RemoveGuest {
    static func run(_ name: String, bed: TestBed) async {
        for node in bed.report.nodes {
            guard let connection = try? await Connection.open(node.uri) else { continue }
            if let domain = try? await connection.domain(named: name) {
                try? await domain.destroy()
                try? await domain.undefine()
            }
            await connection.close()
        }
    }
}
