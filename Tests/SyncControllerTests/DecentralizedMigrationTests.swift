import ClusterAPI
import ControllerRuntime
import Foundation
import Logging
import NIOConcurrencyHelpers
import StateMirror
import SyncController
import TLSTransport
import TestSupport
import Testing

/// One cluster of a decentralized-migration test: its store, CA, sync endpoint, dialer and controllers, run for the
/// scope of `run`.
final class SyncCluster: Sendable {
    let name: String
    let authority: CertificateAuthority
    let store: SQLiteStore
    let serverProvider: TLSContextProvider
    let clientProvider: TLSContextProvider

    init(_ name: String) throws {
        self.name = name
        authority = try CertificateAuthority.create(cluster: name)
        store = try SQLiteStore(
            path: FileManager.default.temporaryDirectory.appendingPathComponent(
                "decentralized-\(name)-\(UUID().uuidString.prefix(8)).sqlite"
            ).path)
        serverProvider = try TLSContextProvider(
            identity: try authority.issue(
                LeafRequest(role: .syncServer, name: "sync", ipAddresses: ["127.0.0.1"])),
            trust: TrustBundle([authority.certificate]))
        clientProvider = try TLSContextProvider(
            identity: try authority.issue(LeafRequest(role: .syncClient, name: "sync")),
            trust: TrustBundle([authority.certificate]))
    }

    /// Trusts `other`'s CA for sync (what `kubevirt-external-ca` does).
    func trust(_ other: SyncCluster) throws {
        for provider in [serverProvider, clientProvider] {
            var bundle = provider.trust
            bundle = TrustBundle(bundle.certificates + [other.authority.certificate])
            try provider.reload(trust: bundle)
        }
    }

    /// A Ready node with a tunnel endpoint.
    func node(_ node: String) async throws {
        _ = try await store.create(
            Kinds.node,
            [
                "apiVersion": "v1", "kind": "Node",
                "metadata": [
                    "name": .string(node),
                    "labels": [
                        "kubernetes.io/hostname": .string(node), "host-model-cpu.node.kubevirt.io/EPYC": "true",
                        "cpu-model.node.kubevirt.io/Westmere": "true",
                    ],
                ],
            ])
        var condition = Resources.condition("Ready", true, reason: "AgentReady")
        condition["lastHeartbeatTime"] = .string(Resources.now())
        _ = try await store.patch(
            Kinds.node, namespace: nil, name: node,
            mergePatch: [
                "status": [
                    "allocatable": ["memory": "4Gi"], "conditions": [condition],
                    "tunnelEndpoint": .string("127.0.0.1:9187"),
                ]
            ], subresource: .status)
    }

    /// A VMI running on `node`.
    func runningVMI(_ vmi: String, namespace: String = "default", on node: String) async throws {
        _ = try await store.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": ["name": .string(vmi), "namespace": .string(namespace)],
                "spec": ["domain": ["resources": ["requests": ["memory": "128Mi"]]]],
            ])
        _ = try await store.patch(
            Kinds.virtualMachineInstance, namespace: namespace, name: vmi,
            mergePatch: ["status": ["phase": "Running", "nodeName": .string(node)]], subresource: .status)
    }

    /// A VM waiting to receive (runStrategy WaitAsReceiver, the restore annotation).
    func receivingVM(_ vm: String, namespace: String) async throws {
        _ = try await store.create(
            Kinds.virtualMachine,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": [
                    "name": .string(vm), "namespace": .string(namespace),
                    "annotations": ["kubevirt.io/restore-run-strategy": "Always"],
                ],
                "spec": [
                    "runStrategy": "WaitAsReceiver",
                    "template": ["spec": ["domain": ["resources": ["requests": ["memory": "128Mi"]]]]],
                ],
            ])
    }

    func migration(_ name: String, namespace: String = "default", vmi: String, spec: JSONValue) async throws {
        var full = spec
        full["vmiName"] = .string(vmi)
        _ = try await store.create(
            Kinds.migration,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": ["name": .string(name), "namespace": .string(namespace)], "spec": full,
            ])
    }

    func get(_ kind: ResourceKind, _ name: String, namespace: String = "default") async throws -> JSONValue {
        try await store.get(kind, namespace: namespace, name: name)
    }

    /// Runs the cluster (endpoint, dialer, controllers with `deadline`) while `body` runs; `body` gets the endpoint's
    /// address.
    func run<T: Sendable>(
        deadline: Duration = .seconds(60), port: Int = 0, _ body: @Sendable (String) async throws -> T
    ) async throws -> T {
        try await ClusterDefaults.ensure(in: store)
        var logger = Logger(label: "test.\(name)")
        logger.logLevel = .warning
        // The port is chosen first, so the controllers know their address and exist before the endpoint serves.
        let port = port == 0 ? try freeLoopbackPort() : port
        let address = "127.0.0.1:\(port)"
        let dialer = SyncDialer(provider: clientProvider, logger: logger, callTimeout: .seconds(5))
        let controllers = ClusterControllers(
            store: store, sync: SyncSettings(advertisedAddresses: [address], deadline: deadline), dialer: dialer,
            logger: logger)
        let endpoint = try SyncEndpoint(
            host: "127.0.0.1", port: port, provider: serverProvider, receiver: controllers.syncReceiver, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { network in
            network.addTask { try await endpoint.run() }
            network.addTask { try await dialer.run() }
            let result: Result<T, any Error>
            do {
                _ = try await endpoint.boundAddress
                result = .success(
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { await controllers.run() }
                        defer { group.cancelAll() }
                        await controllers.waitForSync()
                        return try await body(address)
                    })
            } catch {
                result = .failure(error)
            }
            // Gracefully: cancelling NIO's server with a connection still queued traps.
            endpoint.shutdown()
            dialer.shutdown()
            try await network.waitForAll()
            return try result.get()
        }
    }
}

/// Waits (up to `timeout`) until `condition` holds, re-reading; the last value is in the failure.
func eventually(
    _ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> (Bool, String)
) async throws {
    let deadline = ContinuousClock.now + timeout
    var last = ""
    while ContinuousClock.now < deadline {
        let (done, seen) = try await condition()
        if done { return }
        last = seen
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("\(what) did not happen within \(timeout): \(last)")
    throw CancellationError()
}

@Suite("Decentralized migration: two clusters' controllers mirror a migration over the sync endpoint")
struct DecentralizedMigrationTests {
    static func phase(_ object: JSONValue) -> String { object["status"]?["phase"]?.string ?? "" }
    /// A source VMIM whose target node is known: Scheduled, and at once PreparingTarget (the target prepares).
    static func sourceScheduled(_ object: JSONValue) -> Bool { ["Scheduled", "PreparingTarget"].contains(phase(object)) }

    /// Clusters a and b trusting each other: vm1 running on a's node a1, a VM waiting to receive vm1 in b's namespace
    /// `target`, b's node b1.
    static func pairedClusters() async throws -> (SyncCluster, SyncCluster) {
        let a = try SyncCluster("cluster-a")
        let b = try SyncCluster("cluster-b")
        try a.trust(b)
        try b.trust(a)
        try await a.node("a1")
        try await a.runningVMI("vm1", on: "a1")
        try await b.node("b1")
        try await b.receivingVM("vm1", namespace: "target")
        return (a, b)
    }

    @Test(
        "source and target halves find each other by migrationID, each takes the other's half, both reach Scheduled; deleting the source VMIM cancels both"
    )
    func mirrorAndCancel() async throws {
        let (a, b) = try await Self.pairedClusters()
        try await b.run { bAddress in
            try await a.run { aAddress in
                try await eventually("the receiving VMI waits") {
                    let vmi = try? await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                    return (vmi.map(Self.phase) == "WaitingForSync", "\(vmi.map(Self.phase) ?? "absent")")
                }
                try await b.migration(
                    "receive", namespace: "target", vmi: "vm1", spec: ["receive": ["migrationID": "mig-1"]])
                try await eventually("the target VMIM waits for sync") {
                    let vmim = try await b.get(Kinds.migration, "receive", namespace: "target")
                    return (Self.phase(vmim) == "WaitingForSync", "\(vmim["status"] ?? .null)")
                }
                let waiting = try await b.get(Kinds.migration, "receive", namespace: "target")
                #expect(waiting["status"]?["synchronizationAddresses"] == [.string(bAddress)])
                #expect(
                    waiting["metadata"]?["finalizers"]?.array?.contains(
                        .string("synchronization.kubevirt.io/migrationFinalizer")) == true)

                try await a.migration(
                    "send", vmi: "vm1",
                    spec: ["sendTo": ["migrationID": "mig-1", "connectURL": .string(bAddress)]])
                try await eventually("both halves are Scheduled") {
                    let source = try await a.get(Kinds.migration, "send")
                    let target = try await b.get(Kinds.migration, "receive", namespace: "target")
                    return (
                        Self.sourceScheduled(source) && Self.phase(target) == "Scheduled",
                        "source \(source["status"] ?? .null) target \(target["status"] ?? .null)"
                    )
                }
                let source = try await a.get(Kinds.migration, "send")
                let target = try await b.get(Kinds.migration, "receive", namespace: "target")
                let sourceUID = source["metadata"]?["uid"]?.string
                let targetUID = target["metadata"]?["uid"]?.string
                // Each side's VMI carries both halves; the VMIM shows the same state.
                let sourceVMI = try await a.get(Kinds.virtualMachineInstance, "vm1")
                let targetVMI = try await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                let sourceState = sourceVMI["status"]?["migrationState"]
                let targetState = targetVMI["status"]?["migrationState"]
                #expect(Self.phase(sourceVMI) == "Running", "the source keeps running")
                #expect(sourceState?["migrationUID"]?.string == sourceUID)
                #expect(sourceState?["sourceState"]?["node"] == "a1")
                #expect(sourceState?["sourceState"]?["syncAddress"]?.string == aAddress)
                #expect(sourceState?["targetState"]?["migrationUID"]?.string == targetUID)
                #expect(sourceState?["targetState"]?["node"] == "b1")
                #expect(sourceState?["targetNode"] == "b1")
                #expect(targetState?["migrationUID"]?.string == targetUID)
                #expect(targetState?["sourceState"]?["migrationUID"]?.string == sourceUID)
                #expect(targetState?["sourceNode"] == "a1")
                #expect(targetState?["targetState"]?["node"] == "b1")
                #expect(source["status"]?["migrationState"] == sourceState)
                #expect(target["status"]?["migrationState"] == targetState)
                // Each is bound to the other's cluster; the phase history is KubeVirt's.
                #expect(source["status"]?["synchronizationPeer"]?["cluster"] == "cluster-b")
                #expect(target["status"]?["synchronizationPeer"]?["cluster"] == "cluster-a")
                let sourcePhases = source["status"]?["phaseTransitionTimestamps"]?.array?.compactMap {
                    $0["phase"]?.string
                }
                let targetPhases = target["status"]?["phaseTransitionTimestamps"]?.array?.compactMap {
                    $0["phase"]?.string
                }
                // The source goes on to PreparingTarget at once (the target cluster prepares once its VMI is placed).
                #expect(sourcePhases == ["Synchronizing", "Pending", "Scheduling", "Scheduled", "PreparingTarget"])
                #expect(targetPhases == ["WaitingForSync", "Pending", "Scheduling", "Scheduled"])

                // Deleting the source VMIM cancels both sides: both Failed, the target's canceled by its peer, both
                // finalizers released, the source VMI still running.
                _ = try await a.store.delete(Kinds.migration, namespace: "default", name: "send", precondition: nil)
                try await eventually("both VMIMs are gone") {
                    let sourceLeft = try? await a.get(Kinds.migration, "send")
                    let targetLeft = try? await b.get(Kinds.migration, "receive", namespace: "target")
                    return (
                        sourceLeft == nil && targetLeft == nil,
                        "source \(sourceLeft?["status"] ?? .null) target \(targetLeft?["status"] ?? .null)"
                    )
                }
                let after = try await a.get(Kinds.virtualMachineInstance, "vm1")
                #expect(Self.phase(after) == "Running")
                #expect(after["status"]?["migrationState"]?["abortStatus"] == "Succeeded")
                let receiver = try await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                #expect(Self.phase(receiver) == "Failed", "\(receiver["status"] ?? .null)")
                #expect(
                    receiver["status"]?["migrationState"]?["failureReason"]?.string?.contains("canceled by its peer")
                        == true, "\(receiver["status"] ?? .null)")
            }
        }
    }

    /// Once b's receiving VMI waits: the target VMIM `receive` in b's namespace `target` and the source VMIM `send` in a,
    /// joined by `id`.
    static func startMigration(_ id: String, from a: SyncCluster, to b: SyncCluster, at bAddress: String) async throws {
        try await eventually("the receiving VMI waits") {
            let vmi = try? await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
            return (vmi.map(Self.phase) == "WaitingForSync", "")
        }
        try await b.migration("receive", namespace: "target", vmi: "vm1", spec: ["receive": ["migrationID": .string(id)]])
        try await a.migration(
            "send", vmi: "vm1", spec: ["sendTo": ["migrationID": .string(id), "connectURL": .string(bAddress)]])
    }

    @Test(
        "a failure the target's agent records on its VMIM only (its preparation failed) reaches the source: both Failed, the source running"
    )
    func targetAgentFailure() async throws {
        let (a, b) = try await Self.pairedClusters()
        try await b.run { bAddress in
            try await a.run { _ in
                try await Self.startMigration("mig-f", from: a, to: b, at: bAddress)
                try await eventually("the target is Scheduled") {
                    let target = try await b.get(Kinds.migration, "receive", namespace: "target")
                    return (Self.phase(target) == "Scheduled", "\(target["status"] ?? .null)")
                }
                // What the target node's agent writes when it cannot prepare: the VMIM Failed, nothing on the VMI.
                let message = "node b1 could not prepare the target: disk exists"
                _ = try await b.store.patch(
                    Kinds.migration, namespace: "target", name: "receive",
                    mergePatch: [
                        "status": [
                            "phase": "Failed",
                            "migrationState": [
                                "failed": true, "completed": true, "failureReason": .string(message),
                                "endTimestamp": "2026-12-07T00:00:00.000Z",
                            ],
                            "conditions": [
                                ["type": "Failed", "status": "True", "reason": "TargetPreparationFailed", "message": .string(message)]
                            ],
                        ]
                    ], subresource: .status)
                try await eventually("the source fails too, naming the target's reason") {
                    let source = try await a.get(Kinds.migration, "send")
                    return (
                        Self.phase(source) == "Failed"
                            && source["status"]?["migrationState"]?["failureReason"]?.string?.contains("disk exists") == true,
                        "\(source["status"] ?? .null)"
                    )
                }
                let receiving = try await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                #expect(Self.phase(receiving) == "Failed")
                let kept = try await a.get(Kinds.virtualMachineInstance, "vm1")
                #expect(Self.phase(kept) == "Running")
            }
        }
    }

    @Test(
        "a source whose target never answers fails at the deadline, naming the peer and the last error — also when its VMI still shows an earlier migration's halves (it was received before)"
    )
    func deadline() async throws {
        let a = try SyncCluster("cluster-a")
        try await a.node("a1")
        try await a.runningVMI("vm1", on: "a1")
        // The state a received guest's VMI keeps from the migration that brought it: both halves, target ready.
        _ = try await a.store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: "vm1",
            mergePatch: [
                "status": [
                    "migrationState": [
                        "migrationUid": "earlier", "completed": true, "targetNode": "a1",
                        "sourceState": ["migrationUID": "earlier-source", "node": "elsewhere"],
                        "targetState": [
                            "migrationUID": "earlier", "node": "a1", "nodeAddress": "127.0.0.1:2",
                            "domainReadyTimestamp": "2026-01-01T00:00:00Z",
                        ],
                    ]
                ]
            ], subresource: .status)
        try await a.run(deadline: .seconds(5)) { _ in
            try await a.migration(
                "send", vmi: "vm1", spec: ["sendTo": ["migrationID": "mig-x", "connectURL": "127.0.0.1:1"]])
            try await eventually("the migration fails") {
                let vmim = try await a.get(Kinds.migration, "send")
                return (Self.phase(vmim) == "Failed", "\(vmim["status"] ?? .null)")
            }
            let vmim = try await a.get(Kinds.migration, "send")
            let failed = vmim["status"]?["conditions"]?.array?.first { $0["type"] == "Failed" }
            #expect(failed?["reason"] == "SynchronizationTimeout")
            let message = failed?["message"]?.string ?? ""
            #expect(message.contains("the target cluster at 127.0.0.1:1"), "\(message)")
            #expect(message.contains("last attempt"), "\(message)")
            let vmi = try await a.get(Kinds.virtualMachineInstance, "vm1")
            #expect(Self.phase(vmi) == "Running")
            #expect(vmi["status"]?["migrationState"]?["failed"] == true)
            // It waited for its peer all along: the earlier migration's target half counted for nothing.
            let phases = vmim["status"]?["phaseTransitionTimestamps"]?.array?.compactMap { $0["phase"]?.string }
            #expect(phases == ["Synchronizing", "Failed"], "\(phases ?? [])")
            #expect(vmi["status"]?["migrationState"]?["targetState"] == nil, "\(vmi["status"] ?? .null)")
        }
    }

    @Test("a third cluster syncing a bound migration is refused with PermissionDenied and named on the VMIM")
    func binding() async throws {
        let a = try SyncCluster("cluster-a")
        let b = try SyncCluster("cluster-b")
        let c = try SyncCluster("cluster-c")
        try a.trust(b)
        try b.trust(a)
        try b.trust(c)
        try c.trust(b)
        try await a.node("a1")
        try await a.runningVMI("vm1", on: "a1")
        try await b.node("b1")
        try await b.receivingVM("vm1", namespace: "target")
        try await b.run { bAddress in
            try await a.run { _ in
                try await Self.startMigration("mig-1", from: a, to: b, at: bAddress)
                try await eventually("the target is bound to cluster-a") {
                    let vmim = try await b.get(Kinds.migration, "receive", namespace: "target")
                    return (vmim["status"]?["synchronizationPeer"]?["cluster"] == "cluster-a", "")
                }
                let intruder = SyncDialer(provider: c.clientProvider, logger: Logger(label: "test.c"))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await intruder.run() }
                    defer { intruder.shutdown() }
                    var status = VirtualMachineInstance.Status()
                    var state = MigrationState()
                    var half = MigrationState.SourceState()
                    half.node = "evil"
                    half.migrationUID = "evil-uid"
                    state.sourceState = half
                    status.migrationState = state
                    do throws(SyncCallError) {
                        _ = try await intruder.sendSourceStatus(to: bAddress, migrationID: "mig-1", status: status)
                        Issue.record("cluster-c's status was taken")
                    } catch {
                        #expect(error.kind == .refused(.permissionDenied), "\(error)")
                    }
                }
                let vmim = try await b.get(Kinds.migration, "receive", namespace: "target")
                let refused = vmim["status"]?["conditions"]?.array?.first { $0["type"] == "SynchronizationRefused" }
                #expect(
                    refused?["message"]?.string?.contains("cluster \"cluster-c\"") == true, "\(vmim["status"] ?? .null)"
                )
                let vmi = try await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                #expect(vmi["status"]?["migrationState"]?["sourceState"]?["node"] != "evil")
            }
        }
    }

    @Test("namespace to namespace in one cluster: the controller is its own peer through the same endpoint")
    func namespaceToNamespace() async throws {
        let a = try SyncCluster("cluster-a")
        try await a.node("a1")
        try await a.node("a2")
        try await a.runningVMI("vm1", namespace: "ns1", on: "a1")
        try await a.receivingVM("vm1", namespace: "ns2")
        try await a.run { address in
            try await a.migration(
                "receive", namespace: "ns2", vmi: "vm1", spec: ["receive": ["migrationID": "local-1"]])
            try await a.migration(
                "send", namespace: "ns1", vmi: "vm1",
                spec: ["sendTo": ["migrationID": "local-1", "connectURL": .string(address)]])
            try await eventually("both halves are Scheduled") {
                let source = try await a.get(Kinds.migration, "send", namespace: "ns1")
                let target = try await a.get(Kinds.migration, "receive", namespace: "ns2")
                return (
                    Self.sourceScheduled(source) && Self.phase(target) == "Scheduled",
                    "source \(source["status"] ?? .null) target \(target["status"] ?? .null)"
                )
            }
            let target = try await a.get(Kinds.virtualMachineInstance, "vm1", namespace: "ns2")
            // KubeVirt's #18259: the source node must be known to the target.
            #expect(target["status"]?["migrationState"]?["sourceNode"] == "a1")
            let source = try await a.get(Kinds.migration, "send", namespace: "ns1")
            #expect(source["status"]?["synchronizationPeer"]?["cluster"] == "cluster-a")
        }
    }

    @Test(
        "the outbox survives a controller restart: a status the peer never got is sent once it is up; a source restarted at another address is redialled by its target"
    )
    func restartAndRedial() async throws {
        let (a, b) = try await Self.pairedClusters()
        let bPort = try freeLoopbackPort()
        let bAddress = "127.0.0.1:\(bPort)"
        // The source's first run: the target cluster is down; the VMIM says so.
        try await a.run { _ in
            try await a.migration(
                "send", vmi: "vm1", spec: ["sendTo": ["migrationID": "mig-r", "connectURL": .string(bAddress)]])
            try await eventually("the delivery failure is recorded") {
                let vmim = try await a.get(Kinds.migration, "send")
                return (vmim["status"]?["synchronizationDelivery"]?["lastError"] != nil, "\(vmim["status"] ?? .null)")
            }
        }
        try await b.run(port: bPort) { _ in
            try await eventually("the receiving VMI waits") {
                let vmi = try? await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                return (vmi.map(Self.phase) == "WaitingForSync", "")
            }
            try await b.migration(
                "receive", namespace: "target", vmi: "vm1", spec: ["receive": ["migrationID": "mig-r"]])
            // The source's second run (a new process would do the same: everything it needs is in its store).
            try await a.run { firstAddress in
                try await eventually("both halves are Scheduled") {
                    let source = try await a.get(Kinds.migration, "send")
                    let target = try await b.get(Kinds.migration, "receive", namespace: "target")
                    return (
                        Self.sourceScheduled(source) && Self.phase(target) == "Scheduled",
                        "source \(source["status"] ?? .null) target \(target["status"] ?? .null)"
                    )
                }
                let target = try await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                #expect(
                    target["status"]?["migrationState"]?["sourceState"]?["syncAddress"]?.string == firstAddress)
            }
            // The source comes back at another address; the target's next news must reach it there.
            try await a.run { secondAddress in
                try await eventually("the target knows the source's new address") {
                    let vmi = try await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                    let known = vmi["status"]?["migrationState"]?["sourceState"]?["syncAddress"]?.string
                    return (known == secondAddress, "\(known ?? "none")")
                }
                // What the target's agent reports when the destination domain is ready, mirrored to the source.
                let vmi = try await b.get(Kinds.virtualMachineInstance, "vm1", namespace: "target")
                var state = vmi["status"]?["migrationState"] ?? [:]
                state["targetState"]?["domainReadyTimestamp"] = .string(Migration.timestamp())
                state["targetState"]?["nodeAddress"] = "127.0.0.1"
                _ = try await b.store.patch(
                    Kinds.virtualMachineInstance, namespace: "target", name: "vm1",
                    mergePatch: ["status": ["migrationState": state]], subresource: .status)
                try await eventually("the source is TargetReady") {
                    let source = try await a.get(Kinds.migration, "send")
                    return (Self.phase(source) == "TargetReady", "\(source["status"] ?? .null)")
                }
                // The target records the delivery after the source answered (which may come after the source moved on).
                try await eventually("the target records its delivery to the new address") {
                    let target = try await b.get(Kinds.migration, "receive", namespace: "target")
                    let address = target["status"]?["synchronizationDelivery"]?["peerAddress"]?.string
                    return (address == secondAddress, "\(address ?? "none")")
                }
            }
        }
    }

    @Test("with the feature gate off a decentralized migration fails with the reason")
    func featureGate() async throws {
        let a = try SyncCluster("cluster-a")
        try await a.node("a1")
        try await a.runningVMI("vm1", on: "a1")
        try await ClusterDefaults.ensure(in: a.store)
        _ = try await a.store.patch(
            Kinds.kubeVirt, namespace: KubeVirt.namespace, name: KubeVirt.name,
            mergePatch: ["spec": ["configuration": ["developerConfiguration": ["featureGates": []]]]],
            subresource: .main)
        try await a.run { _ in
            try await a.migration(
                "send", vmi: "vm1", spec: ["sendTo": ["migrationID": "m", "connectURL": "127.0.0.1:1"]])
            try await eventually("the migration fails") {
                let vmim = try await a.get(Kinds.migration, "send")
                return (Self.phase(vmim) == "Failed", "\(vmim["status"] ?? .null)")
            }
            let vmim = try await a.get(Kinds.migration, "send")
            let failed = vmim["status"]?["conditions"]?.array?.first { $0["type"] == "Failed" }
            #expect(failed?["reason"] == "FeatureGateDisabled")
        }
    }
}
