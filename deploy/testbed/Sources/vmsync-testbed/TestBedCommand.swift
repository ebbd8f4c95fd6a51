import ArgumentParser
import CSubreaper
import Foundation
import TestBed

#if canImport(Glibc)
    import Glibc
#endif

/// The local multi-node test bed: the tiny guest and N libvirt "nodes", used by the tests, the benchmarks and the demo.
@main
struct TestBedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmsync-testbed",
        abstract: "Local libvirt nodes in network and mount namespaces, and the tiny heartbeat guest.",
        subcommands: [Up.self, Guest.self, Clean.self, Demo.self]
    )
}

struct CacheOption: ParsableArguments {
    @Option(help: "Where the built guest and libvirt's QEMU capabilities are cached.")
    var cache = ProcessInfo.processInfo.environment["VMSYNC_CACHE"] ?? "/var/cache/vmsync"
}

extension TestBedCommand {
    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start N nodes; write <dir>/testbed.json when all answer; tear everything down on SIGTERM/SIGINT."
        )

        @Option(help: "Number of nodes (1-8).") var nodes = 2
        @Option(
            help:
                "Number of segments (1-4): one switch and subnet each (a cluster's network), joined by a router whose port to each a test can cut; the nodes are split evenly across them in order."
        ) var segments = 1
        @Flag(help: "Nodes reach the other segments' switch hosts only, not their nodes (one port per cluster).")
        var isolated = false
        @Option(help: "The bed's directory (default: a fresh one under the temporary directory).") var dir: String?
        @Option(help: "Tear down when this process exits (the test or benchmark that started the bed).") var parent:
            Int32?
        @Flag(help: "Keep the bed's directory after teardown (logs, images).") var keep = false
        @OptionGroup var cache: CacheOption

        func validate() throws {
            guard (1...8).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 8") }
            guard (1...4).contains(segments), segments <= nodes else {
                throw ValidationError("--segments must be between 1 and 4, and at most --nodes")
            }
            guard getuid() == 0 else { throw ValidationError("the test bed needs root (network and mount namespaces)") }
        }

        func run() throws {
            // SIGTERM, SIGINT and SIGHUP end the wait below (and so tear the bed down) instead of killing the launcher.
            guard vmsync_install_stop_handlers() == 0 else { throw LaunchError("cannot install the signal handlers") }
            try Reaper.shared.start()
            Bed.removeStale()

            let directory = dir ?? NSTemporaryDirectory() + "vmsync-testbed-\(getpid())"
            let bed = Bed(directory: directory, cacheDirectory: cache.cache)
            let report: TestBedReport
            do {
                let guest = try GuestBuilder(cacheDirectory: cache.cache + "/guest").build()
                try bed.up(count: nodes, segments: segments, isolated: isolated)
                let shared = directory + "/shared"
                try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
                report = TestBedReport(
                    directory: directory, launcherPID: getpid(), switchNamespace: bed.switchNamespace,
                    switchAddress: Bed.switchAddress, sharedDirectory: shared, guest: guest, nodes: bed.nodes,
                    segments: bed.segments, routerNamespace: segments > 1 ? bed.routerNamespace : nil)
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                let path = directory + "/" + TestBedReport.fileName
                try encoder.encode(report).write(to: URL(fileURLWithPath: path + ".tmp"))
                guard rename(path + ".tmp", path) == 0 else { throw LaunchError("cannot write \(path)") }
                print("vmsync-testbed: \(nodes) node(s) up; report \(path)")
                for node in report.nodes { print("  node \(node.name): \(node.address)  \(node.uri)") }
                fflush(nil)
            } catch {
                bed.down()
                if !keep { try? FileManager.default.removeItem(atPath: directory) }
                throw error
            }

            var reported = Set<String>()
            while true {
                let received = vmsync_wait_stop(250)
                if received > 0 { break }
                if let parent, kill(parent, 0) != 0, errno == ESRCH { break }
                for node in report.nodes
                where !reported.contains(node.name) && Reaper.shared.hasExited(node.libvirtdPID) {
                    reported.insert(node.name)
                    FileHandle.standardError.write(Data("vmsync-testbed: libvirtd of node \(node.name) exited\n".utf8))
                }
            }
            bed.down()
            if !keep { try? FileManager.default.removeItem(atPath: directory) }
            print("vmsync-testbed: torn down")
        }
    }

    struct Guest: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build (or find cached) the tiny guest; print its files as JSON.")
        @OptionGroup var cache: CacheOption

        func run() throws {
            try Reaper.shared.start()
            let guest = try GuestBuilder(cacheDirectory: cache.cache + "/guest").build()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(guest), as: UTF8.self))
        }
    }

    struct Clean: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove namespaces and processes of beds whose launcher died.")
        func run() throws {
            try Reaper.shared.start()
            Bed.removeStale()
        }
    }
}
