import ClusterAPI
import ControllerRuntime
import Foundation
import Logging
import StateMirror
import SyncController
import Synchronization
import TLSTransport
import TestBed
import TestSupport

/// The state mirror between two clusters' controllers (in this process, each with its SQLite store, its sync endpoint
/// and dialer on loopback mutual TLS), next to its anchor in the same run:
/// - anchor: one bare gRPC + mutual TLS unary round trip (`SyncDialer` → `SyncEndpoint` whose receiver answers at
///   once), p50/p99;
/// - propagation: a change of the source VMI's half (as its agent would write it) until the target cluster's VMI
///   holds it — watch event, outbox, gRPC, receiver, merge, store write — p50/p99 and the ratio to the anchor;
/// - throughput: `migrations` decentralized migrations mirrored at once (all Scheduled), every source half changed
///   together, mirrored updates per second until the target holds them all; and the process's memory per mirrored
///   migration (both controllers are in this process: the figure covers a source and a target side).
enum MirrorBenchmark {
    /// A receiver that answers at once: the anchor's far end.
    struct Echo: SyncReceiver {
        func applySourceStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String {
            "success"
        }
        func applyTargetStatus(_ status: PeerStatus, from peer: SyncPeer) async throws(SyncRefusal) -> String {
            "success"
        }
        func cancelMigration(uid migrationUID: String, from peer: SyncPeer) async throws(SyncRefusal) -> String {
            "migration canceled"
        }
    }

    struct Cluster {
        let name: String
        let store: SQLiteStore
        let server: TLSContextProvider
        let client: TLSContextProvider
        let authority: CertificateAuthority
    }

    static func cluster(_ name: String, in directory: String) throws -> Cluster {
        let authority = try CertificateAuthority.create(cluster: name)
        let trust = TrustBundle([authority.certificate])
        return Cluster(
            name: name,
            store: try SQLiteStore(path: directory + "/\(name).sqlite", retainedChanges: 1_000_000),
            server: try TLSContextProvider(
                identity: try authority.issue(LeafRequest(role: .syncServer, name: "sync", ipAddresses: ["127.0.0.1"])),
                trust: trust),
            client: try TLSContextProvider(
                identity: try authority.issue(LeafRequest(role: .syncClient, name: "sync")), trust: trust),
            authority: authority)
    }

    static let quietMilliseconds = Int(ProcessInfo.processInfo.environment["VMSYNC_BENCH_QUIET_MS"] ?? "") ?? 30

    static func run(migrations count: Int, rounds: Int) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "bench-mirror-\(UUID().uuidString.prefix(6))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let a = try cluster("cluster-a", in: directory)
        let b = try cluster("cluster-b", in: directory)
        for (one, other) in [(a, b), (b, a)] {
            let bundle = TrustBundle([one.authority.certificate, other.authority.certificate])
            try one.server.reload(trust: bundle)
            try one.client.reload(trust: bundle)
        }
        var logger = Logger(label: "vmsync.bench.mirror")
        logger.logLevel = .error

        // The anchor's small status (a phase and a source node): a bare round trip's floor.
        var small = VirtualMachineInstance.Status()
        small.phase = .running
        small.migrationState = MigrationState()
        small.migrationState?.sourceState = MigrationState.SourceState()
        small.migrationState?.sourceState?.node = "a1"

        // A quiet store (no controllers, no watchers): what one VMI status write costs by itself, and its parts.
        do {
            let quiet = try SQLiteStore(path: directory + "/quiet.sqlite")
            _ = try await quiet.create(
                Kinds.virtualMachineInstance,
                [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": ["name": "q", "namespace": "default"],
                    "spec": ["domain": ["resources": ["requests": ["memory": "16Mi"]]]],
                ])
            var gets: [Double] = []
            var patches: [Double] = []
            var decodes: [Double] = []
            var encodes: [Double] = []
            for round in 0..<(rounds + 20) {
                let t0 = ContinuousClock.now
                let current = try await quiet.get(Kinds.virtualMachineInstance, namespace: "default", name: "q")
                let t1 = ContinuousClock.now
                _ = try await quiet.patch(
                    Kinds.virtualMachineInstance, namespace: "default", name: "q",
                    mergePatch: [
                        "status": [
                            "phase": "Running", "migrationState": ["sourceState": ["pod": .string("p\(round)")]],
                        ]
                    ],
                    subresource: .status)
                let t2 = ContinuousClock.now
                let typed = try VirtualMachineInstance(json: current)
                let t3 = ContinuousClock.now
                _ = typed.json
                let t4 = ContinuousClock.now
                if round >= 20 {
                    gets.append(milliseconds(t1 - t0))
                    patches.append(milliseconds(t2 - t1))
                    decodes.append(milliseconds(t3 - t2))
                    encodes.append(milliseconds(t4 - t3))
                }
            }
            print(
                String(
                    format:
                        "mirror: a quiet store, p50: get %.3f ms, status patch %.3f ms; typed VMI decode %.3f ms, encode %.3f ms",
                    ControlPlaneBenchmark.percentile(gets, 50), ControlPlaneBenchmark.percentile(patches, 50),
                    ControlPlaneBenchmark.percentile(decodes, 50), ControlPlaneBenchmark.percentile(encodes, 50)))
        }

        // Both clusters: a Ready node each; `count` running VMIs on A, `count` receiving VMs on B.
        for (cluster, node) in [(a, "a1"), (b, "b1")] {
            try await ClusterDefaults.ensure(in: cluster.store)
            _ = try await cluster.store.create(
                Kinds.node,
                [
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": [
                        "name": .string(node),
                        "labels": [
                            "kubernetes.io/hostname": .string(node), "host-model-cpu.node.kubevirt.io/EPYC": "true",
                        ],
                    ],
                ])
            var ready = Resources.condition("Ready", true, reason: "AgentReady")
            ready["lastHeartbeatTime"] = .string(Resources.now())
            _ = try await cluster.store.patch(
                Kinds.node, namespace: nil, name: node,
                mergePatch: [
                    "status": [
                        "allocatable": ["memory": "4Ti"], "conditions": [ready], "tunnelEndpoint": "127.0.0.1:9187",
                    ]
                ], subresource: .status)
        }
        let spec: JSONValue = ["domain": ["resources": ["requests": ["memory": "16Mi"]]]]
        for index in 0..<count {
            _ = try await a.store.create(
                Kinds.virtualMachineInstance,
                [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": ["name": .string("vm\(index)"), "namespace": "default"], "spec": spec,
                ])
            _ = try await a.store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "vm\(index)",
                mergePatch: ["status": ["phase": "Running", "nodeName": "a1"]], subresource: .status)
            _ = try await b.store.create(
                Kinds.virtualMachine,
                [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "metadata": ["name": .string("vm\(index)"), "namespace": "default"],
                    "spec": ["runStrategy": "WaitAsReceiver", "template": ["spec": spec]],
                ])
        }
        let rssBefore = ControlPlaneBenchmark.rss(getpid())

        // The ports are chosen first, so the controllers know their addresses and exist before the endpoints serve.
        let addressA = "127.0.0.1:\(try freeLoopbackPort())"
        let addressB = "127.0.0.1:\(try freeLoopbackPort())"
        let dialerA = SyncDialer(provider: a.client, logger: logger)
        let dialerB = SyncDialer(provider: b.client, logger: logger)
        let controllersA = ClusterControllers(
            store: a.store, nodeGracePeriod: .seconds(3600), sync: SyncSettings(advertisedAddresses: [addressA]),
            dialer: dialerA, logger: logger)
        let controllersB = ClusterControllers(
            store: b.store, nodeGracePeriod: .seconds(3600), sync: SyncSettings(advertisedAddresses: [addressB]),
            dialer: dialerB, logger: logger)
        let endpointA = try SyncEndpoint(
            host: "127.0.0.1", port: Int(addressA.split(separator: ":")[1])!, provider: a.server,
            receiver: controllersA.syncReceiver, logger: logger)
        let endpointB = try SyncEndpoint(
            host: "127.0.0.1", port: Int(addressB.split(separator: ":")[1])!, provider: b.server,
            receiver: controllersB.syncReceiver, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { network in
            for service in [endpointA, endpointB] as [SyncEndpoint] { network.addTask { try await service.run() } }
            for dialer in [dialerA, dialerB] { network.addTask { try await dialer.run() } }
            _ = try await (endpointA.boundAddress, endpointB.boundAddress)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await controllersA.run() }
                group.addTask { await controllersB.run() }
                defer { group.cancelAll() }
                try await controllersB.settle(timeout: .seconds(600))
                let setup = ContinuousClock.now
                for index in 0..<count {
                    _ = try await b.store.create(
                        Kinds.migration,
                        [
                            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                            "metadata": ["name": .string("r\(index)"), "namespace": "default"],
                            "spec": [
                                "vmiName": .string("vm\(index)"), "receive": ["migrationID": .string("m\(index)")],
                            ],
                        ])
                    _ = try await a.store.create(
                        Kinds.migration,
                        [
                            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                            "metadata": ["name": .string("s\(index)"), "namespace": "default"],
                            "spec": [
                                "vmiName": .string("vm\(index)"),
                                "sendTo": ["migrationID": .string("m\(index)"), "connectURL": .string(addressB)],
                            ],
                        ])
                }
                try await waitUntil(timeout: .seconds(900)) {
                    // (The source side goes on to PreparingTarget at once.)
                    let scheduledA = try await a.store.list(Kinds.migration, Selection()).items.filter {
                        $0["status"]?["phase"] == "PreparingTarget"
                    }.count
                    let scheduledB = try await b.store.list(Kinds.migration, Selection()).items.filter {
                        $0["status"]?["phase"] == "Scheduled"
                    }.count
                    return scheduledA == count && scheduledB == count
                }
                let setupSeconds = seconds(ContinuousClock.now - setup)
                try await controllersA.settle(timeout: .seconds(600))
                try await controllersB.settle(timeout: .seconds(600))
                let rssAfter = ControlPlaneBenchmark.rss(getpid())

                // Propagation of one half, change by change: from the source's write committed (an agent's status
                // write) to the target's committed. The second anchor: one such status write to a store (SQLite,
                // synchronous=FULL) — the target's write is part of the path and must be durable before the peer
                // is told "success" (the outbox then never sends it again).
                // The target's VMI is watched (as its controllers and clients see it), not polled: a poll's reads
                // would take CPU from the path on these two cores.
                // A change that does not arrive within 30 s ends the run with an error naming it.
                let progress = Progress()
                let (storeA, storeB) = (a.store, b.store)
                let (propagation, writes) = try await withThrowingTaskGroup(of: ([Double], [Double])?.self) { group in
                    group.addTask {
                        var propagation: [Double] = []
                        var writes: [Double] = []
                        let targetVMI = try await storeB.watch(
                            Kinds.virtualMachineInstance,
                            Selection(namespace: "default", fields: try FieldSelector("metadata.name=vm0")),
                            from: try await storeB.currentResourceVersion())
                        var arrivals = targetVMI.makeAsyncIterator()
                        for round in 0..<rounds {
                            let pod = "pod-\(round)"
                            // One change at a time: the previous one's tail (the acknowledgement, the delivery record,
                            // the target's own reactions) is over before the next is written, so each is timed alone.
                            try await Task.sleep(for: .milliseconds(quietMilliseconds))
                            progress.state.withLock { $0 = (round, ContinuousClock.now) }
                            let written = ContinuousClock.now
                            try await setSourcePod(pod, vmi: "vm0", in: storeA)
                            let start = ContinuousClock.now
                            writes.append(milliseconds(start - written))
                            while let event = await arrivals.next(),
                                event.object["status"]?["migrationState"]?["sourceState"]?["pod"]?.string != pod
                            {}
                            try Task.checkCancellation()
                            propagation.append(milliseconds(ContinuousClock.now - start))
                        }
                        return (propagation, writes)
                    }
                    group.addTask {
                        while true {
                            try await Task.sleep(for: .seconds(1))
                            let (round, since) = progress.state.withLock { $0 }
                            if ContinuousClock.now - since > .seconds(30) {
                                throw TestBedError("mirror: change \(round + 1) did not reach the target within 30 s")
                            }
                        }
                    }
                    defer { group.cancelAll() }
                    guard let result = try await group.next(), let result else { throw CancellationError() }
                    return result
                }

                // Where the time goes: the receiver's part alone (in process: read, merge, durable write), and with the
                // RPC in front (the dialer to the target's endpoint); the rest of the propagation is the source side
                // (its watch event, the outbox's turn, the status encoded).
                var applies: [Double] = []
                var calls: [Double] = []
                let current = try await a.store.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm0")
                var sent = try VirtualMachineInstance(json: current).status ?? VirtualMachineInstance.Status()
                for round in 0..<rounds {
                    sent.migrationState?.sourceState?.pod = "direct-\(round)"
                    let peer = SyncPeer(cluster: a.name, caFingerprint: "", host: "127.0.0.1")
                    let envelope = try JSONValue(encoding: sent)
                    let start = ContinuousClock.now
                    _ = try await controllersB.syncReceiver.applySourceStatus(
                        PeerStatus(migrationID: "m0", status: sent, envelope: envelope), from: peer)
                    applies.append(milliseconds(ContinuousClock.now - start))
                    sent.migrationState?.sourceState?.pod = "rpc-\(round)"
                    let called = ContinuousClock.now
                    _ = try await dialerA.sendSourceStatus(to: addressB, migrationID: "m0", status: sent)
                    calls.append(milliseconds(ContinuousClock.now - called))
                }
                print(
                    String(
                        format:
                            "mirror: breakdown p50: the target's receiver alone %.2f ms; the RPC with it %.2f ms; so the source side (watch event, outbox turn, encoding) ≈ %.2f ms",
                        ControlPlaneBenchmark.percentile(applies, 50), ControlPlaneBenchmark.percentile(calls, 50),
                        ControlPlaneBenchmark.percentile(propagation, 50) - ControlPlaneBenchmark.percentile(calls, 50))
                )

                // The anchors, in the same run: bare unary round trips (an endpoint that answers at once) carrying the
                // small status and carrying the very status the propagation sends, alternating.
                let anchors = try await roundTrips(
                    server: b.server, client: a.client, statuses: [small, sent], count: rounds * 10 + 50, logger: logger
                )
                let anchor = anchors[0]
                let anchorSame = anchors[1]

                // Every half at once.
                let burst = ContinuousClock.now
                for index in 0..<count { try await setSourcePod("burst", vmi: "vm\(index)", in: a.store) }
                try await waitUntil(timeout: .seconds(900)) {
                    try await b.store.list(Kinds.virtualMachineInstance, Selection()).items.allSatisfy {
                        $0["status"]?["migrationState"]?["sourceState"]?["pod"] == "burst"
                    }
                }
                let burstSeconds = seconds(ContinuousClock.now - burst)

                let anchorP50 = ControlPlaneBenchmark.percentile(anchor, 50)
                let writeP50 = ControlPlaneBenchmark.percentile(writes, 50)
                let p50 = ControlPlaneBenchmark.percentile(propagation, 50)
                let sameP50 = ControlPlaneBenchmark.percentile(anchorSame, 50)
                print(
                    String(
                        format: "mirror: bare gRPC+mTLS unary round trip (anchor) p50 %.2f ms p99 %.2f ms (%d calls)",
                        anchorP50, ControlPlaneBenchmark.percentile(anchor, 99), anchor.count))
                print(
                    String(
                        format:
                            "mirror: the same round trip carrying the propagated status (%d bytes of JSON) p50 %.2f ms p99 %.2f ms",
                        (try? JSONValue(encoding: sent).jsonData().count) ?? 0, sameP50,
                        ControlPlaneBenchmark.percentile(anchorSame, 99)))
                print(
                    String(
                        format:
                            "mirror: one VMI status write to the store (get + patch, anchor 2) p50 %.2f ms p99 %.2f ms",
                        writeP50, ControlPlaneBenchmark.percentile(writes, 99)))
                print(
                    String(
                        format:
                            "mirror: propagation source VMI stored → target VMI stored p50 %.2f ms p99 %.2f ms (%d changes, one at a time); ratio to the round trip %.2f (carrying the same status %.2f), to round trip + one store write %.2f",
                        p50, ControlPlaneBenchmark.percentile(propagation, 99), propagation.count, p50 / anchorP50,
                        p50 / sameP50, p50 / (anchorP50 + writeP50)))
                print(
                    String(
                        format:
                            "mirror: %d migrations mirrored to Scheduled on both sides in %.1f s; all %d source halves changed at once reached the target in %.2f s: %.0f mirrored updates/s",
                        count, setupSeconds, count, burstSeconds, Double(count) / burstSeconds))
                print(
                    String(
                        format:
                            "mirror: process RSS %.1f MiB before the migrations, %.1f MiB with %d mirrored on both sides: %.1f KiB per migration (source and target side together)",
                        Double(rssBefore) / 1024, Double(rssAfter) / 1024, count,
                        Double(rssAfter - rssBefore) / Double(count)))
            }
            for service in [endpointA, endpointB] { service.shutdown() }
            for dialer in [dialerA, dialerB] { dialer.shutdown() }
            try await network.waitForAll()
        }
    }

    /// Bare unary round trips from a dialer with `client`'s identity to an endpoint with `server`'s that answers at
    /// once, `count` per status (the statuses alternating; the first 50 of each not counted): milliseconds per status.
    static func roundTrips(
        server: TLSContextProvider, client: TLSContextProvider, statuses: [VirtualMachineInstance.Status], count: Int,
        logger: Logger
    ) async throws -> [[Double]] {
        let echo = try SyncEndpoint(host: "127.0.0.1", port: 0, provider: server, receiver: Echo(), logger: logger)
        let dialer = SyncDialer(provider: client, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await echo.run() }
            group.addTask { try await dialer.run() }
            let address = try await echo.boundAddress
            var times = [[Double]](repeating: [], count: statuses.count)
            for index in 0..<count {
                for (which, status) in statuses.enumerated() {
                    let start = ContinuousClock.now
                    _ = try await dialer.sendSourceStatus(to: address, migrationID: "m", status: status)
                    if index >= 50 { times[which].append(milliseconds(ContinuousClock.now - start)) }
                }
            }
            echo.shutdown()
            dialer.shutdown()
            try await group.waitForAll()
            return times
        }
    }

    /// Which change the propagation waits for, since when.
    final class Progress: Sendable {
        let state = Mutex((round: 0, since: ContinuousClock.now))
    }

    /// What the source's agent changes in its half (here: the pod, a field the target takes).
    static func setSourcePod(_ pod: String, vmi: String, in store: SQLiteStore) async throws {
        let current = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: vmi)
        var state = current["status"]?["migrationState"] ?? [:]
        state["sourceState"]?["pod"] = .string(pod)
        _ = try await store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: vmi,
            mergePatch: ["status": ["migrationState": state]], subresource: .status)
    }

    static func waitUntil(
        timeout: Duration, every interval: Duration = .milliseconds(20), _ condition: () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: interval)
        }
        throw CancellationError()
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static func seconds(_ duration: Duration) -> Double { milliseconds(duration) / 1000 }
}
