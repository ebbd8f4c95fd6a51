import BedTesting
import ClusterAPI
import ClusterBed
import ClusterClient
import Foundation
import TestBed
import TestSupport
import Testing

extension EndToEnd {
    /// The clusters' networks as across sites: alpha (node a) and beta (node b) each on its own switch, a router
    /// between them whose links a test cuts, and no node reaching the other cluster's nodes — only its switch host
    /// (the controller's sync endpoint and gateway): one port per cluster.
    @Suite(
        "Decentralized migration across separate networks: one port per cluster, and cut links", .serialized,
        .enabled(if: canRunTestBed), .testBed(nodes: 2, segments: 2, isolated: true))
    struct CrossClusterNetworkBedTests {
        typealias Pair = CrossClusterBedTests

        /// Starts the seed's move (both VMIMs applied) and returns a heartbeat monitor of both consoles.
        static func startMove(_ bed: TestBed, _ alpha: BedCluster, _ beta: BedCluster, id: String) async throws
            -> HeartbeatMonitor
        {
            let heartbeat = await Pair.bothConsoles(bed)
            let (target, source) = CrossCluster.migrations(id: id, connectURL: try #require(beta.syncAddress))
            try await beta.apply(target, as: "target-\(id).yaml")
            try await alpha.apply(source, as: "source-\(id).yaml")
            return heartbeat
        }

        @Test(
            "a node of one cluster cannot reach the other's nodes, yet the guest moves through beta's gateway (its KubeVirt crossClusterGateway): no tick lost, both sides Succeeded"
        )
        func throughGateway() async throws {
            let bed = try currentBed()
            // Node a reaches beta's switch host, not node b.
            let toSwitch = try await bed.run(
                on: "a", ["/usr/bin/python3", "-c", Self.reach, bed.report.segments[1].address])
            let toNode = try await bed.run(on: "a", ["/usr/bin/python3", "-c", Self.reach, bed.node("b").address])
            #expect(toSwitch.stdout.contains("reachable"), "\(toSwitch.stdout)\(toSwitch.stderr)")
            #expect(toNode.stdout.contains("unreachable"), "\(toNode.stdout)\(toNode.stderr)")

            let (alpha, beta) = try await Pair.seededPair(bed, gateway: true)
            defer {
                alpha.stopAll()
                beta.stopAll()
            }
            let heartbeat = try await Self.startMove(bed, alpha, beta, id: "gateway-1")
            defer { heartbeat.stop() }
            let ends = try await Pair.endedAlike(bed, alpha, beta)
            #expect(
                ends == ["Succeeded", "Succeeded"], "\(alpha.allOutput.suffix(2000))\n\(beta.allOutput.suffix(2000))")
            let received = try await beta.admin.get(Kinds.virtualMachineInstance, name: CrossCluster.vmName)
            #expect(received["status"]?["migrationState"]?["targetState"]?["gateway"]?.string == beta.gatewayAddress)
            #expect(await heartbeat.waitForTick(from: 1, timeout: 20), "ticks come from b's console")
            #expect(await heartbeat.waitForTicks(5))
            let analysis = heartbeat.analysis()
            #expect(analysis.continuous, "\(analysis)")
            print("through the gateway: \(analysis)")
        }

        @Test(
            "without the gateway the isolated nodes cannot carry the move: it fails at once with the reason on both sides, the source running, nothing left on b"
        )
        func noRouteWithoutGateway() async throws {
            let bed = try currentBed()
            let (alpha, beta) = try await Pair.seededPair(bed)
            defer {
                alpha.stopAll()
                beta.stopAll()
            }
            let heartbeat = try await Self.startMove(bed, alpha, beta, id: "no-route-1")
            defer { heartbeat.stop() }
            let ends = try await Pair.endedAlike(bed, alpha, beta, timeout: 120)
            #expect(ends == ["Failed", "Failed"])
            let sent = try await alpha.admin.get(Kinds.migration, name: "example-source-migration")
            let reason = sent["status"]?["migrationState"]?["failureReason"]?.string ?? ""
            #expect(reason.contains(bed.node("b").address), "the reason names the unreachable node: \(reason)")
            #expect(await heartbeat.waitForTicks(5))
            #expect(heartbeat.analysis().continuous, "\(heartbeat.analysis())")
        }

        @Test(
            "beta's link cut for 5 s while the job copies: the move completes, no tick lost"
        )
        func shortCutDuringRunning() async throws {
            let bed = try currentBed()
            let (alpha, beta) = try await Pair.seededPair(bed, bandwidth: "4Mi", gateway: true)
            defer {
                alpha.stopAll()
                beta.stopAll()
            }
            let heartbeat = try await Self.startMove(bed, alpha, beta, id: "cut-5s")
            defer { heartbeat.stop() }
            try await Pair.waitForCopying(alpha)
            try await bed.setSegmentLink(1, up: false)
            try await Task.sleep(for: .seconds(5))
            try await bed.setSegmentLink(1, up: true)
            let ends = try await Pair.endedAlike(bed, alpha, beta)
            #expect(
                ends == ["Succeeded", "Succeeded"], "\(alpha.allOutput.suffix(2000))\n\(beta.allOutput.suffix(2000))")
            #expect(await heartbeat.waitForTicks(5))
            let analysis = heartbeat.analysis()
            #expect(analysis.continuous, "\(analysis)")
            print("link cut 5 s while running: \(analysis)")
        }

        @Test(
            "the link cut before the move and kept down past the sync deadline: both sides fail naming the peer they waited for, in bounded time; the source runs on"
        )
        func cutPastDeadlineWhileSynchronizing() async throws {
            let bed = try currentBed()
            let (alpha, beta) = try await Pair.seededPair(bed, gateway: true, syncDeadline: 10)
            defer {
                alpha.stopAll()
                beta.stopAll()
            }
            try await bed.setSegmentLink(1, up: false)
            let started = Date()
            let heartbeat = try await Self.startMove(bed, alpha, beta, id: "cut-sync")
            defer { heartbeat.stop() }
            let ends = try await Pair.endedAlike(bed, alpha, beta, timeout: 60)
            let elapsed = Date().timeIntervalSince(started)
            try await bed.setSegmentLink(1, up: true)
            #expect(ends == ["Failed", "Failed"])
            #expect(elapsed < 45, "failed \(Int(elapsed)) s after the start (deadline 10 s)")
            for (cluster, name) in [(alpha, "example-source-migration"), (beta, "example-target-migration")] {
                let vmim = try await cluster.admin.get(Kinds.migration, name: name)
                let reason = vmim["status"]?["migrationState"]?["failureReason"]?.string ?? ""
                #expect(reason.contains("synchronize"), "\(name): \(reason)")
            }
            #expect(await heartbeat.waitForTicks(5))
            #expect(heartbeat.analysis().continuous, "\(heartbeat.analysis())")
        }

        @Test(
            "the link cut while the job copies and kept down: the move fails in bounded time, ended alike on both sides once the link is back; the source runs on, nothing left on b"
        )
        func cutPastDeadlineWhileRunning() async throws {
            let bed = try currentBed()
            let (alpha, beta) = try await Pair.seededPair(bed, bandwidth: "4Mi", gateway: true, syncDeadline: 10)
            defer {
                alpha.stopAll()
                beta.stopAll()
            }
            // What bounds a stalled job is KubeVirt's progress timeout (150 s by default): 20 s here.
            try await alpha.setMigrations(["progressTimeout": 20])
            let heartbeat = try await Self.startMove(bed, alpha, beta, id: "cut-run")
            defer { heartbeat.stop() }
            try await Pair.waitForCopying(alpha)
            try await bed.setSegmentLink(1, up: false)
            let cut = Date()
            let sent = try await alpha.waitFor("the source side Failed", timeout: 120) {
                let vmim = try await alpha.admin.get(Kinds.migration, name: "example-source-migration")
                return vmim["status"]?["phase"] == "Failed" ? vmim : nil
            }
            let elapsed = Date().timeIntervalSince(cut)
            #expect(elapsed < 90, "the source failed \(Int(elapsed)) s after the cut (progress timeout 20 s)")
            print(
                "source failed \(Int(elapsed)) s after the cut: \(sent["status"]?["migrationState"]?["failureReason"] ?? .null)"
            )
            try await bed.setSegmentLink(1, up: true)
            let ends = try await Pair.endedAlike(bed, alpha, beta, timeout: 120)
            #expect(ends == ["Failed", "Failed"])
            #expect(await heartbeat.waitForTicks(5))
            let analysis = heartbeat.analysis()
            #expect(analysis.restarts.isEmpty && analysis.lost.isEmpty, "\(analysis)")
        }

        @Test(
            "kill -9 of the target cluster's controller (its gateway carrying the streams) while the job copies, restarted 2 s later: the move ends alike on both sides — completed, or failed with the source running and nothing left on b — no tick lost"
        )
        func gatewayKilledWhileRunning() async throws {
            let bed = try currentBed()
            let (alpha, beta) = try await Pair.seededPair(bed, bandwidth: "4Mi", gateway: true)
            defer {
                alpha.stopAll()
                beta.stopAll()
            }
            let heartbeat = try await Self.startMove(bed, alpha, beta, id: "gateway-kill")
            defer { heartbeat.stop() }
            try await Pair.waitForCopying(alpha)
            await beta.killController()
            try await Task.sleep(for: .seconds(2))
            try await beta.startController()
            let ends = try await Pair.endedAlike(bed, alpha, beta)
            #expect(await heartbeat.waitForTicks(5))
            let analysis = heartbeat.analysis()
            #expect(analysis.restarts.isEmpty && analysis.lost.isEmpty, "\(analysis)")
            print("the gateway killed while running: \(ends[0]); \(analysis)")
        }

        /// A TCP connect to port 9 of argv[1]: "reachable" (refused or open) or "unreachable" (no route, timeout).
        static let reach = """
            import socket, sys
            s = socket.socket(); s.settimeout(2)
            try:
                s.connect((sys.argv[1], 9)); print("reachable")
            except ConnectionRefusedError:
                print("reachable")
            except OSError as e:
                print("unreachable", e)
            """
    }
}
